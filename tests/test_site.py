"""The website (``make site``): it builds with warnings as errors, every internal link and image
resolves, and a real headless browser (Debian's chromium, driven by Playwright) finds each
lesson page whole: no console errors, every image loaded, code highlighted, lesson 03's plot,
search, and a CJK font for the Chinese in lesson 03's outputs."""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import sys
import threading
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("site")]

LESSONS = sorted(p.stem for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
# The Chinese site, in zh/: its pages keep the repository's paths (notebooks/zh/...).
ZH_PAGES = ["zh/index.html", *(f"zh/notebooks/zh/{n}.html" for n in LESSONS)]
CHROMIUM = next(
    (p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None
)


@pytest.fixture(scope="module")
def build_site():
    """``tools/build_site.py``, imported when a test first needs it (not at collection)."""
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import build_site

        yield build_site
    finally:
        sys.path.remove(str(ROOT / "tools"))


@pytest.fixture(scope="module")
def site(tmp_path_factory, build_site) -> Path:
    """The site, built once for this module (as ``make site`` builds it, elsewhere)."""
    out = tmp_path_factory.mktemp("site")
    done = build_site.build(out)
    assert done.returncode == 0, done.stdout + done.stderr
    return out


def test_the_build_fails_on_a_broken_reference_a_missing_image_or_an_unknown_lexer(
    tmp_path, build_site
):
    source = tmp_path / "src"
    source.mkdir()
    (source / "index.md").write_text(
        "# A page\n\n[a page that is not there](missing.md)\n\n![a picture](nothing.png)\n\n"
        "```nosuchlexer\nx = 1\n```\n"
    )
    done = build_site.sphinx(source, tmp_path / "out")
    log = done.stdout + done.stderr
    assert done.returncode != 0
    assert "missing" in log and "nothing.png" in log and "nosuchlexer" in log


def test_a_link_to_a_file_that_does_not_exist_stops_the_gathering(build_site):
    site = build_site.pages()
    with pytest.raises(SystemExit, match="does not exist"):
        build_site.rewrite("../tools/no_such_tool.py", "notebooks/01_sequential_model.ipynb", site)
    # a page's link stays a page link; anything else in the repository goes to GitHub
    assert (
        build_site.rewrite("../benchmarks/README.md#x", "notebooks/08_speedrun.ipynb", site)
        == "../benchmarks/README.md#x"
    )
    assert build_site.rewrite("../cifar_course/cli.py", "notebooks/08_speedrun.ipynb", site) == (
        f"{build_site.REPO_URL}/blob/main/cifar_course/cli.py"
    )


class Links(HTMLParser):
    """The ``href`` and ``src`` of every tag, and every ``id``."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("href", "src") and value:
                self.links.append(value)
            if name == "id" and value:
                self.ids.add(value)


def test_every_page_is_there_and_every_internal_link_and_image_resolves(site):
    expected = {"index", "credits", "benchmarks/README", *(f"notebooks/{n}" for n in LESSONS)}
    expected |= {f"notebooks/exercises/{n}_exercises" for n in LESSONS}
    expected |= {f"notebooks/exercises/solutions/{n}_solutions" for n in LESSONS}
    expected |= {f"zh/{page.replace('notebooks/', 'notebooks/zh/')}" for page in expected}
    for page in expected:
        assert (site / f"{page}.html").is_file(), page
    parsed: dict[Path, Links] = {}
    for page in site.rglob("*.html"):
        if {"_static", "_sources"} & set(page.relative_to(site).parts[:2]):
            continue  # the theme's template fragments, and the sources offered for download
        parsed[page] = Links()
        parsed[page].feed(page.read_text(encoding="utf-8"))
    broken = []
    for page, found in parsed.items():
        for link in found.links:
            parts = urlsplit(link)
            if parts.scheme or link.startswith("//") or link.startswith("mailto:"):
                continue
            target = (page.parent / unquote(parts.path)).resolve() if parts.path else page
            if not target.exists():
                broken.append(f"{page.relative_to(site)}: {link}")
            elif parts.fragment and target.suffix == ".html":
                ids = parsed[target].ids if target in parsed else set()
                if unquote(parts.fragment) not in ids:
                    broken.append(f"{page.relative_to(site)}: {link} (no such anchor)")
    assert not broken, "\n".join(broken[:20])


class Quiet(http.server.SimpleHTTPRequestHandler):
    """A file server that keeps its log of requests to itself."""

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def browser(site):
    """A headless chromium on the built site, served over HTTP: (page factory, base URL)."""
    if CHROMIUM is None:
        if os.environ.get("CIFAR_COURSE_REQUIRE_BROWSER"):
            pytest.fail("no chromium on PATH: .ci/run installs Debian's chromium")
        pytest.skip("no chromium on PATH (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    handler = functools.partial(Quiet, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield chromium, f"http://127.0.0.1:{server.server_address[1]}"
        finally:
            chromium.close()
            server.shutdown()


def open_page(browser, path: str):
    """The page at ``path``, loaded, with every image asked for at once (none waits to be
    scrolled to), and the console errors it logged."""
    chromium, base = browser
    page = chromium.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"{base}/{path}", wait_until="load")
    page.evaluate("document.querySelectorAll('img').forEach(i => { i.loading = 'eager'; })")
    page.wait_for_function("[...document.images].every(i => i.complete)", timeout=15_000)
    return page, errors


@pytest.mark.parametrize(
    "path", ["index.html", *(f"notebooks/{n}.html" for n in LESSONS), *ZH_PAGES]
)
def test_each_page_loads_whole_in_a_real_browser(browser, path):
    page, errors = open_page(browser, path)
    try:
        assert not errors, errors
        unloaded = page.evaluate(
            "[...document.images].filter(i => !(i.naturalWidth > 0)).map(i => i.src)"
        )
        assert not unloaded
        if not path.endswith("index.html"):
            # code cells are highlighted (Pygments' spans), with the lesson's buttons
            assert page.locator("div.cell_input div.highlight pre span").count() > 20
            assert page.locator("a[href*='colab.research.google.com']").count() >= 1
            download = page.locator("a[href$='.ipynb']")
            assert download.count() >= 1, "no download link for the notebook"
            header = "CPU 上的运行时间" if path.startswith("zh/") else "Run time on a CPU"
            assert header in page.inner_text("article")
            # previous and next
            assert page.locator(".prev-next-area a").count() >= 1
    finally:
        page.close()


def test_on_a_phone_no_page_scrolls_sideways_and_the_lesson_list_opens(browser):
    chromium, base = browser
    page = chromium.new_page(viewport={"width": 390, "height": 844})
    try:
        for path in ["index.html", *(f"notebooks/{n}.html" for n in LESSONS)]:
            page.goto(f"{base}/{path}", wait_until="load")
            assert page.evaluate("document.documentElement.scrollWidth") <= 390, path
        # the ☰ button a reader sees opens the lesson list (pydata-sphinx-theme#2451's fix)
        page.locator(".primary-toggle:visible").first.click()
        page.wait_for_function("document.getElementById('pst-primary-sidebar-modal').open")
        assert page.locator("#pst-primary-sidebar-modal a:has-text('Lesson 03')").first.is_visible()
    finally:
        page.close()


def test_the_download_button_gives_the_notebook_as_it_is_in_the_repository(site):
    for path in sorted((ROOT / "notebooks").rglob("*.ipynb")):
        relative = path.relative_to(ROOT)
        chinese = relative.parts[1] == "zh"
        served = site / ("zh/_sources" if chinese else "_sources") / relative
        assert served.read_bytes() == path.read_bytes(), relative


def test_every_page_switches_to_its_twin_in_the_other_language(site):
    """One switch per page: the page's own language, and a link to the same page in the other
    language (notebooks/X <-> zh/notebooks/zh/X), which exists."""
    pages = [
        p
        for p in site.rglob("*.html")
        if not {"_static", "_sources"} & set(p.relative_to(site).parts[:2])
        and p.name not in ("genindex.html",)
    ]
    assert len(pages) >= 2 * (1 + 3 * len(LESSONS))
    for page in pages:
        html = page.read_text(encoding="utf-8")
        switch = html.split('<nav class="course-languages"', 1)
        assert len(switch) == 2, page.relative_to(site)
        links = Links()
        links.feed(switch[1].split("</nav>", 1)[0])
        assert len(links.links) == 1, page.relative_to(site)
        target = (page.parent / links.links[0]).resolve().relative_to(site.resolve()).as_posix()
        here = page.relative_to(site).as_posix()
        if here.startswith("zh/"):
            expected = here.removeprefix("zh/").replace("notebooks/zh/", "notebooks/")
        else:
            expected = "zh/" + here.replace("notebooks/", "notebooks/zh/")
        if expected.removeprefix("zh/") in ("genindex.html",) or not (site / expected).exists():
            expected = "zh/index.html" if not here.startswith("zh/") else "index.html"
        assert target == expected, here


def installed(page, fonts: list[str]) -> list[str]:
    """The ``fonts`` installed: text set in one of them is not as wide as in the fallback."""
    return page.evaluate(
        """fonts => fonts.filter(f => {
            const c = document.createElement('canvas').getContext('2d');
            c.font = '32px monospace';
            const fallback = c.measureText('abcdefghij模型').width;
            c.font = `32px "${f}", monospace`;
            return c.measureText('abcdefghij模型').width !== fallback;
        })""",
        fonts,
    )


def test_lesson_03_shows_its_plot_and_its_chinese_in_a_cjk_font(browser):
    page, _ = open_page(browser, "notebooks/03_training_loop.html")
    try:
        plots = page.evaluate(
            "[...document.querySelectorAll('div.cell_output img')].map(i => i.naturalWidth)"
        )
        assert plots and max(plots) >= 300
        assert "模型已保存" in page.inner_text("article")
        stack = page.evaluate("getComputedStyle(document.body).fontFamily")
        cjk = [f.strip().strip('"') for f in stack.split(",") if "CJK" in f or "Han" in f]
        assert cjk, stack
        # a font of the stack is installed when text set in it is not set in the fallback
        available = installed(page, cjk)
        assert available, f"none of {cjk} is installed (apt-get install fonts-noto-cjk)"
    finally:
        page.close()


def test_the_chinese_site_is_set_in_a_cjk_font_and_its_search_finds_a_glossary_term(browser):
    page, errors = open_page(browser, "zh/notebooks/zh/02_save_and_load.html")
    try:
        assert page.evaluate("document.documentElement.lang") == "zh-CN"
        assert "状态字典" in page.inner_text("article")
        stack = page.evaluate("getComputedStyle(document.body).fontFamily")
        assert "Noto Sans CJK SC" in stack, stack
        assert installed(page, ["Noto Sans CJK SC"]), "apt-get install fonts-noto-cjk"
        page.locator(".course-languages a[hreflang='en']").first.click()
        page.wait_for_url("**/notebooks/02_save_and_load.html")
    finally:
        page.close()
    hrefs = search(browser, "zh/search.html?q=状态字典")
    assert any("notebooks/zh/02_save_and_load" in h for h in hrefs), hrefs


def search(browser, address: str) -> list[str]:
    """The addresses the site's search page at ``address`` lists, once it has listed any; no
    console error on the way."""
    page, errors = open_page(browser, address)
    try:
        results = page.locator("#search-results a")
        results.first.wait_for(timeout=15_000)
        hrefs = [results.nth(i).get_attribute("href") or "" for i in range(results.count())]
        assert not errors, errors
        return hrefs
    finally:
        page.close()


def test_search_for_state_dict_lists_lesson_02(browser):
    hrefs = search(browser, "search.html?q=state_dict")
    assert any("02_save_and_load" in h for h in hrefs), hrefs
