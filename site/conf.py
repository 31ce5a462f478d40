"""Sphinx configuration of the course's website (``make site``; ``tools/build_site.py``).

The pages are the lessons' stored outputs, rendered by myst-nb without running a cell, in
sphinx-book-theme: the stack of Jupyter Book 1, whose launch buttons (Colab), download button
(.ipynb), previous/next links and search the course needs as they are.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the package, installed or not
from cifar_course import REPO_URL  # noqa: E402  (loads no PyTorch)

project = "cifar-course"
author = "the cifar-course authors"
copyright = "the cifar-course authors"  # noqa: A001 (Sphinx's name)
language = "en"

extensions = ["myst_nb"]
root_doc = "index"
exclude_patterns = ["_build", "**.ipynb_checkpoints"]

nb_execution_mode = "off"  # never run a lesson: the site shows the outputs stored in it
nb_merge_streams = True  # a cell's printed lines in one block, as JupyterLab shows them
myst_heading_anchors = 4  # links to "README.md#expected-results" and the like resolve
myst_enable_extensions = ["dollarmath"]
suppress_warnings = ["mystnb.unknown_mime_type"]  # widget state that a saved notebook may carry

html_theme = "sphinx_book_theme"
html_title = "cifar-course"
OWNER, REPO = REPO_URL.removeprefix("https://github.com/").split("/")
html_baseurl = f"https://{OWNER}.github.io/{REPO}/"  # GitHub Pages' address of the repository
html_static_path = ["_static"]
html_css_files = ["course.css"]
html_js_files = ["course.js"]  # the sidebar buttons (see the file)
html_favicon = "_static/favicon.svg"
html_context = {"default_mode": "auto"}  # light or dark as the reader's system is set
html_show_sourcelink = False
html_last_updated_fmt = None
html_theme_options = {
    "repository_url": REPO_URL,
    "repository_branch": "main",
    "path_to_docs": "",
    "use_repository_button": True,
    "use_download_button": True,
    "launch_buttons": {"colab_url": "https://colab.research.google.com"},
    "home_page_in_toc": True,
    "show_navbar_depth": 1,
}
