"""Sphinx configuration of the course's website (``make site``; ``tools/build_site.py``).

The pages are the lessons' stored outputs, rendered by myst-nb without running a cell, in
sphinx-book-theme: the stack of Jupyter Book 1, whose launch buttons (Colab), download button
(.ipynb), previous/next links and search the course needs as they are.
"""

import logging
import posixpath
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the package, installed or not
from cifar_course import REPO_URL  # noqa: E402  (loads no PyTorch)

project = "cifar-course"
author = "the cifar-course authors"
copyright = "the cifar-course authors"  # noqa: A001 (Sphinx's name)
language = "en"  # tools/build_site.py builds the Chinese site with -D language=zh_CN

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
templates_path = ["_templates"]
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
    "article_header_end": ["language-switch.html", "article-header-buttons.html"],
}

# The two sites: English at the root, Chinese in zh/. A page's twin: notebooks/X <-> notebooks/zh/X;
# the front page, the credits and the measurement record are on both sites.
LANGUAGES = (("en", "English", "en"), ("zh_CN", "中文", "zh-CN"))  # Sphinx's name, label, HTML's
CHINESE_NOTEBOOKS = "notebooks/zh/"


def twin(pagename: str, to_chinese: bool) -> str | None:
    """The page of the other language's site that ``pagename`` corresponds to, relative to that
    site's root; None if it has none."""
    if to_chinese and pagename.startswith("notebooks/"):
        pagename = CHINESE_NOTEBOOKS + pagename.removeprefix("notebooks/")
    elif not to_chinese and pagename.startswith(CHINESE_NOTEBOOKS):
        pagename = "notebooks/" + pagename.removeprefix(CHINESE_NOTEBOOKS)
    if pagename.startswith("notebooks/"):
        return pagename if (ROOT / f"{pagename}.ipynb").exists() else None
    return pagename if pagename in ("index", "credits", "benchmarks/README", "search") else None


def language_switch(app, pagename, templatename, context, doctree) -> None:
    """Give the template ``language-switch.html`` the links to this page in each language."""
    chinese = app.config.language.startswith("zh")
    here = posixpath.dirname(pagename)
    links = []
    for code, label, html_code in LANGUAGES:
        current = code.startswith("zh") == chinese
        if current:
            links.append((label, "", True, html_code))
            continue
        target = twin(pagename, to_chinese=not chinese) or "index"
        root = "../" if chinese else "zh/"
        href = posixpath.relpath(f"{root}{target}.html", here or ".")
        links.append((label, href, False, html_code))
    context["course_languages"] = links


def search_terms() -> str:
    """A jieba dictionary of the glossary's Chinese terms (notebooks/zh/TERMS.md, read by
    tools/zh.py): the Chinese site's search then finds "状态字典" as one word, as well as "状态"
    and "字典"."""
    sys.path.insert(0, str(ROOT / "tools"))
    from zh import CJK, load_terms

    words = {term for _, chinese, _, _ in load_terms() for term in chinese if CJK.search(term)}
    path = Path(tempfile.gettempdir()) / "cifar_course_search_terms.txt"
    path.write_text("".join(f"{w} 100000\n" for w in sorted(words)), encoding="utf-8")
    return str(path)


def setup(app) -> None:
    app.connect("html-page-context", language_switch)
    app.connect("config-inited", chinese_site)


def chinese_site(app, config) -> None:
    """The Chinese site's own title, address and search words."""
    if config.language.startswith("zh"):
        import jieba

        jieba.setLogLevel(logging.WARNING)  # not its "Building prefix dict" lines on each build
        # Sphinx 9's Chinese search writes "window.Stemmer = ChineseStemmer" into
        # language_data.js, but the stemmer code it ships with it is English's (EnglishStemmer):
        # every page then logs "ChineseStemmer is not defined". Its Latin words are stemmed in
        # English, so the English name is the right one.
        from sphinx.search.zh import SearchChinese

        SearchChinese.language_name = "English"
        config.html_title = "cifar-course 中文版"
        config.author = config.copyright = "cifar-course 的作者们"
        config.html_baseurl = html_baseurl + "zh/"
        config.html_search_options = {"dict": search_terms()}
