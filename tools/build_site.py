"""Build the course's website into ``_build/site/`` from the lessons' stored outputs.

    python tools/build_site.py          # what `make site` runs

It gathers the pages into ``_build/site_src/``, keeping the repository's layout so that the
lessons' relative links between themselves still hold:

- ``index.md``, the front page: the README without its contributors' sections (``FOR_CONTRIBUTORS``)
  and its credits, which get a page of their own;
- the lessons, the exercises and their solutions (``notebooks/``), with their stored outputs;
- ``benchmarks/README.md``, the measurement record;
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
from pathlib import Path, PurePosixPath

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from cifar_course import REPO_URL  # noqa: E402

SOURCE, OUT = ROOT / "_build" / "site_src", ROOT / "_build" / "site"
FOR_CONTRIBUTORS = ("Tests", "Layout")  # README sections that are not for learners
CREDITS = "Data and image credits"
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
    """A heading's anchor, as GitHub and myst make it for plain words: "data-and-image-credits"."""
    return re.sub(r"[^a-z0-9 -]", "", title.lower()).replace(" ", "-")


def pages() -> dict[str, str]:
    """Each page's repository path (POSIX) -> its path in the site's sources."""
    mapping = {"README.md": "index.md", "benchmarks/README.md": "benchmarks/README.md"}
    for notebook in sorted((ROOT / "notebooks").rglob("*.ipynb")):
        if ".ipynb_checkpoints" not in notebook.parts:
            path = notebook.relative_to(ROOT).as_posix()
            mapping[path] = path
    return mapping


def rewrite(target: str, page: str, site: dict[str, str]) -> str:
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
    if repo_path == "README.md" and anchor:
        moved = {slug(title): f"{REPO_URL}#{slug(title)}" for title in FOR_CONTRIBUTORS}
        moved[slug(CREDITS)] = "credits.md"
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


def rewrite_text(text: str, page: str, site: dict[str, str]) -> str:
    """Every Markdown and HTML link of ``text`` (from ``page``) through ``rewrite``, outside
    code blocks."""
    out, fenced = [], False
    for line in text.split("\n"):
        if line.lstrip().startswith("```"):
            fenced = not fenced
        if not fenced:
            line = LINK.sub(lambda m: m[1] + rewrite(m[2], page, site) + m[3], line)
            line = HTML_LINK.sub(lambda m: m[1] + rewrite(m[2], page, site) + m[3], line)
        out.append(line)
    return "\n".join(out)


def toctree(caption: str, docs: list[str]) -> str:
    """A hidden table of contents: the sidebar's section ``caption``, with ``docs`` in order."""
    return "\n".join(["", "```{toctree}", ":hidden:", f":caption: {caption}", "", *docs, "```", ""])


def front_page(readme: str, site: dict[str, str]) -> tuple[str, str]:
    """(the front page, the start of the credits page) from the README; the sidebar lists the
    notebooks of ``site`` (``pages()``)."""
    intro, sections = readme_sections(readme)
    kept = [body for title, body in sections if title not in FOR_CONTRIBUTORS + (CREDITS,)]
    credits = next(body for title, body in sections if title == CREDITS)
    notebooks = [p.removesuffix(".ipynb") for p in site if p.endswith(".ipynb")]
    toc = "".join(
        toctree(caption, [n for n in notebooks if n.count("/") == depth])
        for caption, depth in (("Lessons", 1), ("Exercises", 2), ("Solutions", 3))
    )
    toc += toctree("Reference", ["benchmarks/README", "credits"])
    return intro + "".join(kept) + toc, credits.replace("## " + CREDITS, "# " + CREDITS, 1)


def gather(source: Path = SOURCE) -> None:
    """Write the site's sources into ``source``."""
    if source.exists():
        shutil.rmtree(source)
    site = pages()
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    index, credits = front_page(readme, site)
    site_with_credits = site | {"cifar_course/images/SOURCES.md": "credits.md"}
    (source / "benchmarks").mkdir(parents=True)
    shutil.copy(ROOT / "site" / "colab-badge.svg", source / "colab-badge.svg")
    (source / "index.md").write_text(
        rewrite_text(index, "README.md", site_with_credits), encoding="utf-8"
    )
    sources = ROOT / "cifar_course" / "images" / "SOURCES.md"
    photographs = re.sub(r"^#", "##", sources.read_text(encoding="utf-8"), flags=re.M)
    (source / "credits.md").write_text(
        rewrite_text(credits, "README.md", site_with_credits)
        + "\n"
        + rewrite_text(photographs, "cifar_course/images/SOURCES.md", site_with_credits),
        encoding="utf-8",
    )
    record = (ROOT / "benchmarks" / "README.md").read_text(encoding="utf-8")
    (source / "benchmarks" / "README.md").write_text(
        rewrite_text(record, "benchmarks/README.md", site_with_credits), encoding="utf-8"
    )
    for path in site:
        if not path.endswith(".ipynb"):
            continue
        notebook = json.loads((ROOT / path).read_text(encoding="utf-8"))
        badge = posixpath.relpath("colab-badge.svg", PurePosixPath(path).parent)
        for cell in notebook["cells"]:
            if cell["cell_type"] == "markdown":
                text = rewrite_text("".join(cell["source"]), path, site_with_credits)
                cell["source"] = text.replace(COLAB_BADGE, badge)
        (source / path).parent.mkdir(parents=True, exist_ok=True)
        (source / path).write_text(json.dumps(notebook, ensure_ascii=False), encoding="utf-8")


def sphinx(source: Path, out: Path) -> subprocess.CompletedProcess[str]:
    """Sphinx's HTML build of ``source`` into ``out`` with the site's configuration, warnings as
    errors (``--keep-going``: all of them are reported)."""
    command = [sys.executable, "-m", "sphinx", "-b", "html", "-W", "--keep-going", "-q"]
    command += ["-c", str(ROOT / "site"), str(source), str(out)]
    return subprocess.run(command, capture_output=True, text=True)


def build(out: Path = OUT) -> subprocess.CompletedProcess[str]:
    """Gather the pages and build the site into ``out``. The pages' download buttons then offer
    the notebooks as they are in the repository, not the copies with the site's links."""
    source = SOURCE if out == OUT else Path(tempfile.mkdtemp(prefix="site_src_"))
    try:
        gather(source)
        done = sphinx(source, out)
    finally:
        if source != SOURCE:
            shutil.rmtree(source, ignore_errors=True)
    if done.returncode == 0:
        for path in pages():
            if path.endswith(".ipynb"):
                shutil.copy(ROOT / path, out / "_sources" / path)
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
