"""Build the course's website into ``_build/site/`` from the lessons' stored outputs: the
English site there, the Chinese one (``notebooks/zh/``, ``README.zh-CN.md``) in ``zh/``, each
page with a switch to its twin in the other language.

    python tools/build_site.py          # what `make site` runs

For each language it gathers the pages into ``_build/site_src/`` (``_build/site_src_zh/``),
keeping the repository's layout so that the lessons' relative links between themselves still
hold:

- ``index.md``, the front page: the README without its contributors' sections (``FOR_CONTRIBUTORS``)
  and its credits, which get a page of their own;
- the lessons, the exercises and their solutions (``notebooks/``; ``notebooks/zh/`` for the
  Chinese site), with their stored outputs;
- ``benchmarks/README.md``, the measurement record (in English on both sites);
- ``credits.md``: the data's and the photographs' sources (``cifar_course/images/SOURCES.md``).

A link to a file that is not a page (a log under ``benchmarks/``, a source file) is pointed at
the repository on GitHub (``REPO_URL``). Then Sphinx builds the HTML with warnings as errors
(``site/conf.py``): a broken cross-reference, a missing image or an unknown lexer fails the build.
No cell is run.
"""

from __future__ import annotations

import argparse
import json
import posixpath
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from cifar_course import REPO_URL  # noqa: E402

SOURCE, OUT = ROOT / "_build" / "site_src", ROOT / "_build" / "site"


@dataclass(frozen=True)
class Language:
    """One language of the site: its README, its notebooks' folder, where it is built (relative
    to the English site), Sphinx's name for it, and its README's headings the site treats apart."""

    code: str
    readme: str
    notebooks: str
    folder: str
    sphinx: str
    for_contributors: tuple[str, ...]  # README sections that are not for learners
    credits: str
    captions: tuple[str, str, str, str]  # the sidebar: lessons, exercises, solutions, reference
    record_note: str  # put above the measurement record
    record_title: str  # the record's title on this site (its sidebar entry)


ENGLISH = Language(
    code="en",
    readme="README.md",
    notebooks="notebooks",
    folder="",
    sphinx="en",
    for_contributors=("Tests", "Layout"),
    credits="Data and image credits",
    captions=("Lessons", "Exercises", "Solutions", "Reference"),
    record_note="",
    record_title="Measurements",
)
CHINESE = Language(
    code="zh",
    readme="README.zh-CN.md",
    notebooks="notebooks/zh",
    folder="zh",
    sphinx="zh_CN",
    for_contributors=("测试",),
    credits="数据和图片的来源",
    captions=("课程", "练习", "解答", "参考"),
    record_note="> 这是课程的测量记录，只有英文版：每个数字都出自这里列出的日志和机器。\n\n",
    record_title="测量记录（Measurements）",
)
LANGUAGES = (ENGLISH, CHINESE)
LINK = re.compile(r"(!?\[[^\]]*\]\()([^)\s]+)(\))")
# The lessons' "Open in Colab" badge, served with the site instead of from Google: the site needs
# nothing from another server to show whole (a copy of the look, site/colab-badge.svg).
COLAB_BADGE = "https://colab.research.google.com/assets/colab-badge.svg"
HTML_LINK = re.compile(r'((?:href|src)=")([^"]+)(")')


def readme_sections(text: str) -> tuple[str, list[tuple[str, str]]]:
    """The README's text before its first ``##`` heading, and each ``##`` section as
    (title, text)."""
    parts = re.split(r"^## ", text, flags=re.M)
    sections = []
    for part in parts[1:]:
        sections.append((part.partition("\n")[0].strip(), "## " + part))
    return parts[0], sections


def slug(title: str) -> str:
    """A heading's anchor, as GitHub and myst make it: "data-and-image-credits", "测试"."""
    return re.sub(r"[^\w -]", "", title.lower()).replace(" ", "-")


def pages(language: Language = ENGLISH) -> dict[str, str]:
    """Each page's repository path (POSIX) -> its path in the site's sources."""
    mapping = {language.readme: "index.md", "benchmarks/README.md": "benchmarks/README.md"}
    for notebook in sorted((ROOT / language.notebooks).rglob("*.ipynb")):
        path = notebook.relative_to(ROOT).as_posix()
        if ".ipynb_checkpoints" in notebook.parts or (
            language is ENGLISH and path.startswith(CHINESE.notebooks + "/")
        ):
            continue
        mapping[path] = path
    return mapping


def site_url(language: Language) -> str:
    """Where the site of ``language`` is published (GitHub Pages, ``html_baseurl``)."""
    owner, repo = REPO_URL.removeprefix("https://github.com/").split("/")
    return f"https://{owner}.github.io/{repo}/" + (language.folder + "/" if language.folder else "")


def rewrite(target: str, page: str, site: dict[str, str], language: Language = ENGLISH) -> str:
    """A link ``target`` found in the repository file ``page``, as the site needs it: to another
    page, relative to this page's place in the site; to anything else in the repository, its
    address on GitHub. Web addresses and in-page anchors stay as they are."""
    if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
        return target
    path, hash_, anchor = target.partition("#")
    resolved = PurePosixPath(page).parent / path
    parts: list[str] = []
    for part in resolved.parts:
        if part == "..":
            if not parts:
                raise SystemExit(f"{page}: the link {target!r} leaves the repository")
            parts.pop()
        elif part != ".":
            parts.append(part)
    repo_path = "/".join(parts)
    other = next((lang for lang in LANGUAGES if lang.readme == repo_path), None)
    if other is not None and other is not language:  # the other language's front door
        if anchor in {slug(title) for title in other.for_contributors}:  # not on its front page
            return f"{REPO_URL}/blob/main/{other.readme}#{anchor}"
        return site_url(other) + hash_ + anchor
    if repo_path == language.readme and anchor:
        moved = {
            slug(title): f"{REPO_URL}/blob/main/{language.readme}#{slug(title)}"
            for title in language.for_contributors
        }
        moved[slug(language.credits)] = "credits.md"
        if anchor in moved:  # a section that is not on the front page
            target = moved[anchor]
            if target.startswith(REPO_URL):
                return target
            return posixpath.relpath(target, PurePosixPath(site[page]).parent)
    if repo_path in site:
        here = PurePosixPath(site[page]).parent
        there = PurePosixPath(site[repo_path])
        return posixpath.relpath(there, here) + hash_ + anchor
    if not (ROOT / repo_path).exists():
        raise SystemExit(f"{page}: the link {target!r} leads to {repo_path}, which does not exist")
    kind = "tree" if (ROOT / repo_path).is_dir() else "blob"
    return f"{REPO_URL}/{kind}/main/{repo_path}{hash_}{anchor}"


def rewrite_text(text: str, page: str, site: dict[str, str], language: Language = ENGLISH) -> str:
    """Every Markdown and HTML link of ``text`` (from ``page``) through ``rewrite``, outside
    code blocks."""
    out, fenced = [], False
    for line in text.split("\n"):
        if line.lstrip().startswith("```"):
            fenced = not fenced
        if not fenced:
            line = LINK.sub(lambda m: m[1] + rewrite(m[2], page, site, language) + m[3], line)
            line = HTML_LINK.sub(lambda m: m[1] + rewrite(m[2], page, site, language) + m[3], line)
        out.append(line)
    return "\n".join(out)


def toctree(caption: str, docs: list[str]) -> str:
    """A hidden table of contents: the sidebar's section ``caption``, with ``docs`` in order."""
    return "\n".join(["", "```{toctree}", ":hidden:", f":caption: {caption}", "", *docs, "```", ""])


def front_page(readme: str, site: dict[str, str], language: Language = ENGLISH) -> tuple[str, str]:
    """(the front page, the start of the credits page) from the README; the sidebar lists the
    notebooks of ``site`` (``pages()``)."""
    intro, sections = readme_sections(readme)
    apart = language.for_contributors + (language.credits,)
    kept = [body for title, body in sections if title not in apart]
    credits = next(body for title, body in sections if title == language.credits)
    notebooks = [p.removesuffix(".ipynb") for p in site if p.endswith(".ipynb")]
    depth = language.notebooks.count("/") + 1
    lessons, exercises, solutions, reference = language.captions
    toc = "".join(
        toctree(caption, [n for n in notebooks if n.count("/") == depth + extra])
        for caption, extra in ((lessons, 0), (exercises, 1), (solutions, 2))
    )
    toc += toctree(reference, ["benchmarks/README", "credits"])
    heading = "## " + language.credits
    return intro + "".join(kept) + toc, credits.replace(heading, "# " + language.credits, 1)


def gather(source: Path = SOURCE, language: Language = ENGLISH) -> None:
    """Write the site's sources of ``language`` into ``source``."""
    if source.exists():
        shutil.rmtree(source)
    site = pages(language)
    readme = (ROOT / language.readme).read_text(encoding="utf-8")
    index, credits = front_page(readme, site, language)
    site_with_credits = site | {"cifar_course/images/SOURCES.md": "credits.md"}
    (source / "benchmarks").mkdir(parents=True)
    shutil.copy(ROOT / "site" / "colab-badge.svg", source / "colab-badge.svg")
    (source / "index.md").write_text(
        rewrite_text(index, language.readme, site_with_credits, language), encoding="utf-8"
    )
    sources = ROOT / "cifar_course" / "images" / "SOURCES.md"
    photographs = re.sub(r"^#", "##", sources.read_text(encoding="utf-8"), flags=re.M)
    (source / "credits.md").write_text(
        rewrite_text(credits, language.readme, site_with_credits, language)
        + "\n"
        + rewrite_text(photographs, "cifar_course/images/SOURCES.md", site_with_credits, language),
        encoding="utf-8",
    )
    record = (ROOT / "benchmarks" / "README.md").read_text(encoding="utf-8")
    if language.record_note:  # after the title, in this site's language
        _, _, rest = record.partition("\n")
        record = f"# {language.record_title}\n\n{language.record_note}{rest.lstrip(chr(10))}"
    (source / "benchmarks" / "README.md").write_text(
        rewrite_text(record, "benchmarks/README.md", site_with_credits, language),
        encoding="utf-8",
    )
    for path in site:
        if not path.endswith(".ipynb"):
            continue
        notebook = json.loads((ROOT / path).read_text(encoding="utf-8"))
        badge = posixpath.relpath("colab-badge.svg", PurePosixPath(path).parent)
        for cell in notebook["cells"]:
            if cell["cell_type"] == "markdown":
                text = rewrite_text("".join(cell["source"]), path, site_with_credits, language)
                cell["source"] = text.replace(COLAB_BADGE, badge)
        (source / path).parent.mkdir(parents=True, exist_ok=True)
        (source / path).write_text(json.dumps(notebook, ensure_ascii=False), encoding="utf-8")


def sphinx(
    source: Path, out: Path, language: Language = ENGLISH
) -> subprocess.CompletedProcess[str]:
    """Sphinx's HTML build of ``source`` into ``out`` with the site's configuration, warnings as
    errors (``--keep-going``: all of them are reported)."""
    command = [sys.executable, "-m", "sphinx", "-b", "html", "-W", "--keep-going", "-q"]
    command += ["-D", f"language={language.sphinx}"]
    command += ["-c", str(ROOT / "site"), str(source), str(out)]
    return subprocess.run(command, capture_output=True, text=True)


def build(out: Path = OUT) -> subprocess.CompletedProcess[str]:
    """Gather the pages and build the site of each language into ``out`` (the Chinese one into
    ``out/zh``). The pages' download buttons then offer the notebooks as they are in the
    repository, not the copies with the site's links. Returns the first failed build, or the last
    one."""
    for language in LANGUAGES:
        folder = out / language.folder if language.folder else out
        if out == OUT:
            source = SOURCE.with_name(
                SOURCE.name + (f"_{language.code}" if language.folder else "")
            )
        else:
            source = Path(tempfile.mkdtemp(prefix=f"site_src_{language.code}_"))
        try:
            gather(source, language)
            done = sphinx(source, folder, language)
        finally:
            if out != OUT:
                shutil.rmtree(source, ignore_errors=True)
        if done.returncode != 0:
            return done
        for path in pages(language):
            if path.endswith(".ipynb"):
                shutil.copy(ROOT / path, folder / "_sources" / path)
    return done


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT, help="default: _build/site")
    args = parser.parse_args()
    done = build(args.out)
    sys.stdout.write(done.stdout)
    sys.stderr.write(done.stderr)
    if done.returncode == 0:
        print(f"built {args.out}/index.html")
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())
