// The theme's ☰ and contents buttons: pydata-sphinx-theme 0.20 and sphinx-book-theme 1.4 both
// listen on the first ".primary-toggle" / ".secondary-toggle" of the page, a button of the top
// bar that is hidden, not on the article's buttons that a reader sees and taps
// (pydata/pydata-sphinx-theme#2451). Each visible button hands its click to that first one, so
// that a phone opens the lesson list and the page's contents, and a wide screen collapses the
// sidebar.
document.addEventListener("DOMContentLoaded", () => {
  for (const selector of [".primary-toggle", ".secondary-toggle"]) {
    const [first, ...others] = document.querySelectorAll(selector);
    for (const button of others) {
      button.addEventListener("click", (event) => {
        event.preventDefault();
        event.stopPropagation();
        first.click();
      });
    }
  }
});
