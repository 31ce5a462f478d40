"""The Chinese edition's notebooks (``notebooks/zh/``): kept in step with the English ones.

Each English notebook (lessons, exercises, solutions) has a Chinese twin at the same place under
``notebooks/zh/``, with the same cells in the same order (matched by cell id):

- **markdown** is translated. Each translated cell records the English text it translates
  (``metadata.translation``: its SHA-1 and the text itself), so that a change to the English cell
  makes the translation *stale*, and the difference can be shown;
- **code** is the English code with its comments translated, nothing else: compared token by
  token with the comments left out. The one allowed difference: the setup cell of an exercise or
  solution notebook turns on Chinese answers (``LANGUAGE_CODE``);
- **outputs** are the English notebook's, copied: the code is the same, so the Chinese notebooks
  need no run of their own. The exception: a solutions notebook's checks print their verdict in
  Chinese, so ``sync`` runs the Chinese solutions notebook's code (seconds, on a CPU) and stores
  the lines its checks print.

    python tools/zh.py sync                  # rebuild code and outputs from the English, keep
                                             # the translations; new cells come in English
    python tools/zh.py status                # list stale and untranslated cells (exit 1 if any)
    python tools/zh.py export NOTEBOOK > F   # the cells to translate, as text to edit
    python tools/zh.py export --all NOTEBOOK # every translatable cell, translated or not
    python tools/zh.py import F              # put the edited text back (checked first)

An export file holds one block per cell: a line ``=== <cell id> <markdown|code> <notebook>
en=<hash> ===`` (the hash says which English the block translates), then the cell's text.
Replace the text with its translation (for code, translate the comments only) and import the
file. Lines starting with ``#|`` are notes and are not imported; a stale cell's block starts with
``#| stale`` lines showing the English change: translate it and delete those lines, or import
refuses the block. Import checks every block first and writes nothing if one is refused. Relative
links may be written as in the English notebook: importing points them at the right file from
the Chinese notebook's folder, and the Colab badge at the Chinese notebook.
"""

from __future__ import annotations

import argparse
import ast
import difflib
import functools
import hashlib
import io
import posixpath
import re
import sys
import textwrap
import tokenize
from pathlib import Path, PurePosixPath

import nbformat

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from cifar_course import REPO_URL  # noqa: E402  (loads no PyTorch)

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
ZH = NOTEBOOKS / "zh"
TERMS = ZH / "TERMS.md"
# The lecture note the course grew from, where this repository sits beside it (not in the wheel).
LECTURE_NOTE = ROOT.parent / "shared" / "lecture" / "note.md"
COLAB = "https://colab.research.google.com/github/" + REPO_URL.removeprefix("https://github.com/")
# What the setup cell of a Chinese exercise or solution notebook adds to the English one.
LANGUAGE_CODE = 'import cifar_course\n\ncifar_course.set_language("zh")'
LANGUAGE_LINES = "\n\n# 练习的检查、提示和解法用中文回答\n" + LANGUAGE_CODE.replace(
    '("zh")', '("zh")  # 英文：cifar_course.set_language("en")'
)
CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
WIDE_CHARS = "\u3000-\u303f\u3400-\u4dbf\u4e00-\u9fff\uff00-\uffef"
URL = r"https?://[A-Za-z0-9._~:/?#\[\]@!$&'*+,;=%-]+"
CHINESE = re.compile(r"[\u3000-\u303f\u3400-\u4dbf\u4e00-\u9fff\uff00-\uffef]")  # with ，。：
WORD = re.compile(r"[A-Za-z]{2,}")
LINK = re.compile(r"(!?\[[^\]]*\]\()([^)\s]+)(\))")
HTML_LINK = re.compile(r'((?:href|src)=")([^"]+)(")')
BLOCK = re.compile(r"^=== (\S+) (markdown|code) (\S+)(?: en=([0-9a-f]+))? ===$")
SHORTEST = 0.8  # Chinese characters per English word below which a sentence looks dropped


def english_notebooks() -> list[Path]:
    """Every English notebook: the lessons, their exercises and the solutions, in order."""
    found = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    found += sorted((NOTEBOOKS / "exercises").glob("[0-9][0-9]_*.ipynb"))
    found += sorted((NOTEBOOKS / "exercises" / "solutions").glob("[0-9][0-9]_*.ipynb"))
    return found


def chinese_notebooks() -> list[Path]:
    """Every notebook under ``notebooks/zh/``."""
    return sorted(p for p in ZH.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)


def zh_path(english: Path) -> Path:
    return ZH / english.relative_to(NOTEBOOKS)


def en_path(chinese: Path) -> Path:
    return NOTEBOOKS / chinese.relative_to(ZH)


def rel(path: Path) -> str:
    return path.resolve().relative_to(ROOT).as_posix()


def sha(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def speaks_chinese(english: Path) -> bool:
    """Whether the Chinese twin's setup cell turns on Chinese answers: the exercise and solution
    notebooks, whose checks print feedback."""
    return "exercises" in english.relative_to(NOTEBOOKS).parts


def is_setup(cell: nbformat.NotebookNode) -> bool:
    return cell.cell_type == "code" and cell.source.lstrip().startswith("# Setup:")


# ---------------------------------------------------------------------------------------------
# Code: the same tokens, comments aside


WRITEFILE = re.compile(r"\A%%writefile[^\n]*\.py\n")  # a cell that writes a Python script


def as_python(source: str) -> list[str]:
    """The cell as Python, in parts: IPython's syntax (``%magic``, ``!shell``) turned into
    Python, as the kernel does; a ``%%writefile script.py`` cell as its first line and the
    script itself, whose comments are a learner's to read (and to translate) too."""
    from IPython.core.inputtransformer2 import TransformerManager

    magic = WRITEFILE.match(source)
    if magic:
        return [magic[0], source[magic.end() :]]
    return [TransformerManager().transform_cell(source)]


def code_tokens(source: str) -> list[tuple[int, str]]:
    """The cell's Python tokens without comments and line breaks inside statements: what must be
    the same in both languages."""
    skip = {tokenize.COMMENT, tokenize.NL, tokenize.ENCODING, tokenize.ENDMARKER}
    parts = as_python(source)
    tokens: list[tuple[int, str]] = [(-1, parts[0])] if len(parts) == 2 else []
    return tokens + [
        (t.type, t.string)
        for t in tokenize.generate_tokens(io.StringIO(parts[-1]).readline)
        if t.type not in skip
    ]


def comments(source: str) -> list[str]:
    """The text of each comment in a code cell (a written script's too), without its ``#``."""
    found = []
    for t in tokenize.generate_tokens(io.StringIO(as_python(source)[-1]).readline):
        if t.type == tokenize.COMMENT:
            found.append(t.string.lstrip("#").strip())
    return found


def is_prose(comment: str) -> bool:
    """Whether a comment is English prose to translate: three words or more, no Chinese, and not
    a line of code put aside (``# q1.hint()``, ``# torch.save(model, "m.pth")``)."""
    if CJK.search(comment) or len(WORD.findall(comment)) < 3:
        return False
    if comment.startswith(("noqa", "type:", "pragma")):
        return False
    try:
        ast.parse(comment)
    except SyntaxError:
        return True
    return False


def is_code_put_aside(comment: str) -> bool:
    """Whether a comment is a line of code to uncomment (``# q1.hint()``,
    ``# torch.save(model, "m.pth")``): a call of a method or function of a module."""
    if not re.match(r"[\w.]+\.\w+\(.*\)$", comment):
        return False
    try:
        ast.parse(comment)
    except SyntaxError:
        return False
    return True


def same_code(english: str, chinese: str, setup_speaks: bool) -> bool:
    """Whether ``chinese`` is ``english`` with other comments (plus the language switch in a
    Chinese exercise notebook's setup cell)."""
    if setup_speaks:
        english = english + "\n" + LANGUAGE_CODE
    try:
        return code_tokens(english) == code_tokens(chinese)
    except (tokenize.TokenError, SyntaxError, IndentationError):
        return english == chinese


# ---------------------------------------------------------------------------------------------
# Markdown: is it translated?


def prose_units(text: str) -> list[str]:
    """The markdown's paragraphs, list items and table rows, without code, links' addresses,
    web addresses, HTML tags and math: what a reader reads as sentences."""
    text = re.sub(r"```.*?```", " ", text, flags=re.S)
    text = re.sub(r"<!--.*?-->", " ", text, flags=re.S)
    text = re.sub(r"\$\$.*?\$\$", " ", text, flags=re.S)
    text = re.sub(r"``.+?``|`[^`\n]*`", " ", text)
    text = re.sub(r"\]\([^)]*\)", "]", text)
    text = re.sub(URL, " ", text)
    text = re.sub(r"<[^>]*\b(?:alt|title)=[\"']([^\"']*)[\"'][^>]*>", r" \1 ", text)  # read too
    text = re.sub(r"<[^>]+>", " ", text)
    text = re.sub(r"\$[^$\n]+\$", " ", text)
    text = re.sub(r"《[^》]*》", " ", text)  # a title quoted as it is: 《Learning Multiple Layers》
    text = re.sub(r"\[!\[[^\]]*\]\]", " ", text)  # a linked image: the Colab badge
    units: list[str] = []
    for paragraph in re.split(r"\n\s*\n", text):
        current: list[str] = []
        for line in paragraph.split("\n"):
            starts_item = re.match(r"\s*([-*+]|\d+[.)])\s|\s*\|", line)
            if starts_item and current:
                units.append(" ".join(current))
                current = []
            current.append(line)
        if current:
            units.append(" ".join(current))
    return [u.strip() for u in units if u.strip()]


ENGLISH_RUN = re.compile(r"[A-Za-z][A-Za-z']+(?:[ ,;:()-]+[A-Za-z][A-Za-z']+){3,}")
GLOSS = re.compile(f"(?<=[{WIDE_CHARS}])[（(][A-Za-z][^（）()\n]*[）)]")
SENTENCE_END = re.compile(r"(?<=[。！？；])|(?<=[.!?;])\s+")
CODE_LIKE = re.compile(r"[\w]*[._()][\w.()]*")


def english_sentences(unit: str) -> list[str]:
    """The sentences of ``unit`` written in English only: four English words or more, and not
    one Chinese character."""
    return [
        part.strip()
        for part in SENTENCE_END.split(unit)
        if part and len(WORD.findall(CODE_LIKE.sub(" ", part))) >= 4 and not CJK.search(part)
    ]


def untranslated(text: str, english: str = "") -> list[str]:
    """The units of a Chinese cell that are still English: four English words or more with fewer
    Chinese characters than half of them, four English words in a row, a sentence of four
    English words or more without a Chinese character, or a heading without Chinese that is not
    a heading of the ``english`` cell too (``## TensorBoard``), or a unit of two words or more
    copied from it."""
    found = []
    kept = set(prose_units(english))
    for unit in prose_units(text):
        unit = GLOSS.sub(" ", unit)  # 分布式数据并行（Distributed Data Parallel, DDP）
        words = len(WORD.findall(unit))
        chinese = len(CJK.findall(unit))
        heading = unit.lstrip().startswith("#") and not chinese and unit not in kept
        heading = heading and bool(WORD.findall(CODE_LIKE.sub(" ", unit.lstrip("# "))))
        copied = unit in kept and words >= 2 and not chinese
        if (
            (words >= 4 and 2 * chinese < words)
            or ENGLISH_RUN.search(unit)
            or heading
            or copied
            or english_sentences(unit)
        ):
            found.append(unit)
    return found


WIDE = "\u3000-\u303f\u3400-\u4dbf\u4e00-\u9fff\uff00-\uffef"  # Chinese characters and punctuation
SPACE_AFTER_PUNCTUATION = re.compile(r"([。，；：！？、）」”](?:\*\*|\*)?) +(?=[\u4e00-\u9fff])")
BLOCK_START = re.compile(r"\s*([-*+]\s|\d+[.)]\s|#|\||>|```|<|$)")


def join_chinese_lines(text: str) -> str:
    """``text`` with each line break between two Chinese characters removed, and each space after
    Chinese punctuation: markdown shows a break inside a paragraph as a space, which Chinese does
    not put between its characters.
    Code blocks, and lines that start a list item, heading, table row, quote or tag, stay."""
    lines = text.split("\n")
    out: list[str] = []
    fenced = False
    for line in lines:
        starts_block = BLOCK_START.match(line)
        if (
            out
            and not fenced
            and not starts_block
            and not re.match(r"\s*(#|\|)", out[-1])  # a heading or a table row ends at its line
            and re.search(f"[{WIDE}]$", out[-1])
            and re.match(f"\\s*[{WIDE}]", line)
        ):
            out[-1] += line.lstrip()  # a list item's indented next line too
        else:
            out.append(line)
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif (
            not fenced
        ):  # no space after Chinese punctuation: **学习率。**试试, not **学习率。** 试试
            out[-1] = SPACE_AFTER_PUNCTUATION.sub(r"\1", out[-1])
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------
# Links: from the Chinese notebook's folder


def localize_links(text: str, english: Path, chinese: Path) -> str:
    """Relative links written for the English notebook, pointed at the same file from the Chinese
    notebook's folder, unless a file of that name is there (a Chinese twin); the Colab badge at
    the Chinese notebook."""
    en_dir = PurePosixPath(rel(english)).parent
    zh_dir = PurePosixPath(rel(chinese)).parent

    def fix(target: str) -> str:
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            return target
        path, hash_, anchor = target.partition("#")
        if not path:
            return target
        if (ROOT / posixpath.normpath(zh_dir / path)).exists():
            return target
        there = posixpath.normpath(en_dir / path)
        if (ROOT / there).exists():
            return posixpath.relpath(there, zh_dir) + hash_ + anchor
        return target

    out, fenced = [], False
    for line in text.split("\n"):
        if line.lstrip().startswith("```"):
            fenced = not fenced
        if not fenced:
            line = LINK.sub(lambda m: m[1] + fix(m[2]) + m[3], line)
            line = HTML_LINK.sub(lambda m: m[1] + fix(m[2]) + m[3], line)
        out.append(line)
    colab = f"{COLAB}/blob/main/"
    return "\n".join(out).replace(colab + rel(english) + ")", colab + rel(chinese) + ")")


# ---------------------------------------------------------------------------------------------
# Terms (notebooks/zh/TERMS.md) and the lecture's own words


@functools.cache  # read once: every cell of every notebook is checked against it
def load_terms() -> list[tuple[list[str], list[str], list[str], bool]]:
    """The glossary's rows: (English spellings, Chinese, spellings to avoid, core). A core term
    (the first table) must be used wherever the English cell uses the English one."""
    rows, core = [], False
    for line in TERMS.read_text(encoding="utf-8").splitlines():
        if line.startswith("## "):
            core = line.startswith("## 核心")
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not line.startswith("| ") or len(cells) < 3 or cells[0] in ("英文", "---"):
            continue
        english = [t.strip() for t in cells[0].split("/") if t.strip()]
        chinese = [t.strip() for t in cells[1].split("/") if t.strip()]
        avoid = [t.strip() for t in re.split(r"[,，]", cells[2]) if t.strip()]
        rows.append((english, chinese, avoid, core))
    return rows


def without_quotes(text: str) -> str:
    """``text`` without the lecture's words quoted in 「」, which stay as the lecture wrote them."""
    return re.sub(r"「[^」]*」", " ", text)


def avoided(text: str, where: str) -> list[str]:
    """A line for each spelling that the glossary says not to use."""
    text = without_quotes(text)
    return [
        f"{where}: writes {bad!r}; the glossary (notebooks/zh/TERMS.md) says {'/'.join(zh)}"
        for _, zh, avoid, _ in load_terms()
        for bad in avoid
        # 方式一 is a numbering to avoid; 方式一样 ("in the same way") is another word
        if re.search(re.escape(bad) + ("(?![一-鿿])" if bad[-1] in "一二" else ""), text)
    ]


def english_term(term: str) -> re.Pattern[str]:
    words = [re.escape(w) for w in re.split(r"[\s-]+", term)]
    return re.compile(r"(?<![A-Za-z_])" + r"[\s-]+".join(words) + r"(?:s|es)?(?![A-Za-z_])", re.I)


def terms_missing(english: str, chinese: str, where: str) -> list[str]:
    """A line for each core term in the English prose whose Chinese is missing from ``chinese``."""
    prose = " ".join(prose_units(english))
    found = []
    for en_terms, zh_terms, _, core in load_terms():
        if not core:
            continue
        pairs = (
            list(zip(en_terms, zh_terms, strict=True))
            if len(en_terms) == len(zh_terms)
            else [(t, zh_terms[0]) for t in en_terms]
        )
        for en_term, zh_term in pairs:
            if english_term(en_term).search(prose) and zh_term.replace(" ", "") not in re.sub(
                r"\s+", "", chinese
            ):
                found.append(
                    f"{where}: the English says {en_term!r}, the translation lacks {zh_term!r} "
                    "(notebooks/zh/TERMS.md)"
                )
                break
    return found


NUMBER = re.compile(r"(?<![A-Za-z0-9_.])\d+(?:[.,]\d+)*")


def numbers_missing(english: str, chinese: str, where: str) -> list[str]:
    """A line for each number of the English prose that the translation does not write: a
    figure is copied as it is, never rounded or dropped."""
    have = set(NUMBER.findall(" ".join(prose_units(chinese))))
    return [
        f"{where}: the English says {number}, the translation does not"
        for number in sorted(set(NUMBER.findall(" ".join(prose_units(english)))) - have)
    ]


BOUNDARY = set("，。：；！？、“”‘’「」（）()[]【】《》,.:;!?'\"`#*>-=|/①②③④⑤⑥⑦⑧⑨⑩") | {""}


def in_the_note(note: str, quote: str) -> bool:
    """Whether ``quote`` is a whole piece of one line of the note: it starts and ends where the
    note's words do (at a line's ends or at punctuation), so that 「保存方式1所占的内存小」 is not
    taken from 「一般保存方式2比保存方式1所占的内存小」, which says the opposite."""
    quote = re.sub(r"\s+", "", quote)
    if len(quote) < 2:
        return False
    for line in note.splitlines():
        line = re.sub(r"\s+", "", line)
        start = line.find(quote)
        while start != -1:
            before = line[start - 1 : start] if start else ""
            after = line[start + len(quote) : start + len(quote) + 1]
            if (before in BOUNDARY or quote[0] in BOUNDARY) and (
                after in BOUNDARY or quote[-1] in BOUNDARY
            ):
                return True
            start = line.find(quote, start + 1)
    return False


def quotes_not_in(note: str, text: str, where: str) -> list[str]:
    """A line for each 「quote」 that is not a whole piece of the lecture note's own words."""
    return [
        f"{where}: 「{quote}」 is not in the lecture note word for word (a whole phrase of it)"
        for quote in re.findall(r"「([^」]*)」", text)
        if not in_the_note(note, quote)
    ]


# ---------------------------------------------------------------------------------------------
# The exercises' messages: English and Chinese side by side


SHOWN = ("NotYet", "Feedback")  # what a learner reads: their text goes through say()


def constant_text(node: ast.AST) -> str:
    """The literal text of a string or f-string node, its placeholders left out."""
    if isinstance(node, ast.BinOp):  # "expected %s, got %s" % (a, b)
        return constant_text(node.left)
    parts = [node] if isinstance(node, ast.Constant) else getattr(node, "values", [])
    return " ".join(
        p.value for p in parts if isinstance(p, ast.Constant) and isinstance(p.value, str)
    )


def messages_outside_say(path: Path) -> list[str]:
    """A line for each English message in an exercise module that is not one of a pair: an English
    string outside ``say(english, chinese)`` and outside an (English, Chinese) pair given to
    ``Exercise``; and each pair whose Chinese side holds no Chinese."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    allowed: set[int] = set()
    found: list[str] = []
    name = rel(path)

    def texts(node: ast.AST) -> list[ast.AST]:
        return [n for n in ast.walk(node) if isinstance(n, ast.Constant | ast.JoinedStr)]

    def has_chinese(node: ast.AST) -> bool:
        return any(
            isinstance(n, ast.Constant) and isinstance(n.value, str) and CHINESE.search(n.value)
            for n in ast.walk(node)
        )

    for node in ast.walk(tree):
        if isinstance(node, ast.Compare) or (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", None) in ("startswith", "endswith", "match", "search")
        ):  # text that PyTorch or Python writes, looked for, not shown
            allowed.update(id(n) for n in texts(node))
        pairs: list[tuple[ast.AST, ast.AST]] = []
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "say":
            given = {k.arg: k.value for k in node.keywords}
            sides = [*node.args[:2], given.get("english"), given.get("chinese")]
            sides = [side for side in sides if side is not None]
            if len(sides) == 2:
                pairs.append((sides[0], sides[1]))
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) in SHOWN:
            for arg in node.args:  # what a learner reads, whatever its words
                if isinstance(arg, ast.JoinedStr) or (
                    isinstance(arg, ast.Constant | ast.BinOp) and constant_text(arg) != ""
                ):
                    found.append(f"{name}:{node.lineno}: a message outside say()")
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Exercise":
            given = list(node.args) + [
                k.value for k in node.keywords if k.arg != "solution"
            ]  # a solution's Chinese side is its code with the comments translated, if any
            pairs += [
                (v.elts[0], v.elts[1])
                for v in given
                if isinstance(v, ast.Tuple) and len(v.elts) == 2
            ]
            solution = next((k.value for k in node.keywords if k.arg == "solution"), None)
            if isinstance(solution, ast.Tuple) and len(solution.elts) == 2:
                allowed.update(id(n) for n in texts(solution))
            elif isinstance(solution, ast.Constant) and isinstance(solution.value, str):
                if not comments(textwrap.dedent(solution.value)):  # code alone: no language
                    allowed.add(id(solution))
        for english, chinese in pairs:
            allowed.update(id(n) for n in texts(english) + texts(chinese))
            if not has_chinese(chinese):
                found.append(f"{name}:{english.lineno}: the Chinese side holds no Chinese")
            elif untranslated(" ".join(constant_text(n) for n in texts(chinese))):
                found.append(f"{name}:{english.lineno}: the Chinese side is still partly English")
        if isinstance(node, ast.FunctionDef | ast.ClassDef | ast.Module) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                allowed.add(id(first.value))  # a docstring
    inside_f_strings = {
        id(part)
        for node in ast.walk(tree)
        if isinstance(node, ast.JoinedStr)
        for part in node.values
    }
    for node in ast.walk(tree):
        if id(node) in allowed | inside_f_strings:
            continue
        if not isinstance(node, ast.Constant | ast.JoinedStr):
            continue
        text = constant_text(node)
        if re.search(r"[A-Za-z]{2,}[,;:.]?(?:\s+%\w)*\s+[A-Za-z]{2,}", text):  # not a file name
            found.append(f"{name}:{node.lineno}: English text outside say(): {text.strip()[:70]!r}")
    return found


# ---------------------------------------------------------------------------------------------
# Sync, status


class Refused(Exception):
    """Bad input to the tool: the one line that says what to do."""


def translation(cell: nbformat.NotebookNode) -> dict | None:
    """The cell's record of the English it translates, or None; a damaged record is refused."""
    done = cell.get("metadata", {}).get("translation")
    if done is None:
        return None
    if not (
        isinstance(done, dict)
        and isinstance(done.get("en"), str)
        and isinstance(done.get("en_sha1"), str)
    ):
        raise Refused(
            f"cell {cell.get('id')}: its translation record is damaged; delete "
            "metadata.translation and import the cell again"
        )
    return done


def mark(cell: nbformat.NotebookNode, english_source: str) -> None:
    """Record that ``cell`` translates ``english_source`` as it is now (and what the translation
    was, so that a search-and-replace over both languages can be told from an English change)."""
    cell.metadata["translation"] = {
        "en_sha1": sha(english_source),
        "en": english_source,
        "zh_sha1": sha(cell.source),
    }


def replaced_in_both(done: dict, english: str, chinese: str) -> bool:
    """Whether a record whose hash no longer fits its text was changed by a search-and-replace
    over both languages (the README's recipe for a fork): the recorded English is the English
    now, and the translation changed since it was recorded. If only the English (and its
    record) changed, the translation may say something the English no longer says."""
    return (
        done["en"] == english
        and done["en_sha1"] != sha(english)
        and done.get("zh_sha1") not in (None, sha(chinese))
    )


def needs_translation(cell: nbformat.NotebookNode) -> bool:
    """Whether an English cell has text to translate: any markdown; code with prose comments."""
    if cell.cell_type == "markdown":
        return True
    return cell.cell_type == "code" and any(is_prose(c) for c in comments(cell.source))


CHECK = re.compile(r"^(q\d)\.check\((.*)\)$")
DECIMAL = re.compile(r"\d+\.\d+")  # a measured time in a check's line: 4.01 ms


def is_solutions(english: Path) -> bool:
    return english.name.endswith("_solutions.ipynb")


def check_outputs_in_chinese(nb: nbformat.NotebookNode) -> dict[str, list]:
    """Run a Chinese solutions notebook's code in this process, in an empty folder, as its kernel
    would: each check cell's output (the line its check prints, now in Chinese), by cell id. The
    English solutions notebook's stored lines are English; its twin's are the Chinese ones."""
    import contextlib
    import tempfile

    import cifar_course

    outputs: dict[str, list] = {}
    scope: dict = {"__name__": "__main__"}
    try:
        with tempfile.TemporaryDirectory() as folder, contextlib.chdir(folder):
            for cell in nb.cells:
                if cell.cell_type != "code":
                    continue
                printed = io.StringIO()
                with contextlib.redirect_stdout(printed):
                    exec(cell.source, scope)
                if CHECK.match(cell.source.strip()):
                    outputs[cell.id] = [
                        nbformat.v4.new_output("stream", name="stdout", text=printed.getvalue())
                    ]
    finally:
        cifar_course.set_language("en")
    return outputs


def carry_comments(english: str, recorded: str, translated: str) -> str:
    """New English code with the translations of its comments that it shares with the English the
    translation was made from (``recorded``, translated as ``translated``): a code change keeps
    the translated comments of the lines it left alone."""
    translated = translated.removesuffix(LANGUAGE_LINES)
    old, new = comments(recorded), comments(translated)
    if len(old) != len(new):
        return english
    chinese = dict(zip(old, new, strict=True))
    lines = english.split("\n")
    if WRITEFILE.match(english):  # the comments of a written script: its lines after the first
        shift, body = 1, as_python(english)[-1]
    else:
        shift, body = 0, english
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(body).readline))
    except (tokenize.TokenError, SyntaxError):
        return english
    for t in tokens:
        text = t.string.lstrip("#").strip()
        if t.type == tokenize.COMMENT and text in chinese:
            row, col = t.start[0] - 1 + shift, t.start[1]
            lines[row] = lines[row][:col] + "# " + chinese[text]
    return "\n".join(lines)


def sync_one(english: Path) -> nbformat.NotebookNode:
    """The Chinese twin of ``english`` rebuilt: its code and outputs from the English notebook,
    its translations kept (cells matched by id). A cell new in English comes in English; a
    changed code cell keeps the translated comments of its unchanged lines."""
    en = nbformat.read(english, as_version=4)
    chinese = zh_path(english)
    old = nbformat.read(chinese, as_version=4) if chinese.exists() else None
    old_cells = {c.id: c for c in old.cells} if old else {}
    speaks = speaks_chinese(english)
    by_english = {  # a translation whose cell got a new id (cut and pasted) is found by its text
        translation(c)["en"]: c for c in (old.cells if old else []) if translation(c)
    }
    cells = []
    for cell in en.cells:
        new = nbformat.from_dict(cell)
        new.metadata = nbformat.from_dict(dict(cell.metadata))
        before = old_cells.get(cell.id)
        if before is None or before.cell_type != cell.cell_type:
            before = by_english.get(cell.source)
            before = before if before is not None and before.cell_type == cell.cell_type else None
        done = translation(before) if before is not None else None
        if done and replaced_in_both(done, cell.source, before.source):
            done = {"en_sha1": sha(cell.source), "en": cell.source, "zh_sha1": sha(before.source)}
        setup = speaks and is_setup(cell)
        if done and cell.cell_type == "markdown":
            new.source = localize_links(before.source, english, chinese)
            new.metadata["translation"] = done
        elif done and cell.cell_type == "code":
            if same_code(cell.source, before.source, setup):
                new.source = before.source
                new.metadata["translation"] = done
            else:  # the code changed: keep what can be kept, and translate the rest again
                extra = LANGUAGE_LINES if setup else ""
                new.source = carry_comments(cell.source, done["en"], before.source) + extra
                if not any(is_prose(c) for c in comments(new.source)):
                    mark(new, cell.source)
        elif before is not None and CJK.search(before.source):
            # translated in Jupyter, not imported: kept (status asks for an import), never lost
            if cell.cell_type == "markdown" or same_code(cell.source, before.source, setup):
                new.source = before.source
        if "translation" not in new.metadata and not (
            before is not None and new.source == before.source and CJK.search(before.source)
        ):
            if cell.cell_type == "markdown":
                new.source = localize_links(cell.source, english, chinese)
            if setup and not new.source.endswith(LANGUAGE_LINES):
                new.source = cell.source + LANGUAGE_LINES
        if "translation" in new.metadata and "zh_sha1" in new.metadata["translation"]:
            new.metadata["translation"]["zh_sha1"] = sha(new.source)
        cells.append(new)
    en.cells = cells
    if is_solutions(english):
        for cell_id, outputs in check_outputs_in_chinese(en).items():
            cell = next(c for c in en.cells if c.id == cell_id)
            kept = old_cells.get(cell_id)
            text = "".join(o.get("text", "") for o in outputs)
            if kept is not None and DECIMAL.sub("#", text) == DECIMAL.sub(
                "#", "".join(o.get("text", "") for o in kept.get("outputs", []))
            ):
                outputs = kept.outputs  # the same line, a timing's digits aside: unchanged
            cell.outputs = outputs
    return en


def sync() -> None:
    """Rebuild every Chinese twin; nothing is written unless all of them could be rebuilt."""
    for english in english_notebooks():  # every twin exists before links are pointed at them
        if not zh_path(english).exists():
            zh_path(english).parent.mkdir(parents=True, exist_ok=True)
            nbformat.write(sync_one(english), zh_path(english))
    rebuilt = {zh_path(english): sync_one(english) for english in english_notebooks()}
    for chinese, notebook in rebuilt.items():
        nbformat.write(notebook, chinese)


def diff_of(before: str, after: str) -> str:
    lines = difflib.unified_diff(
        before.splitlines(), after.splitlines(), "translated", "now", lineterm=""
    )
    return "\n".join(list(lines)[2:])


FENCE = re.compile(r"```.*?```", re.S)
CODE_SPAN = re.compile(r"``[^`]+``|`[^`]+`")
# Code spans that are the checks' words, which the Chinese checks print in Chinese.
TRANSLATED_SPANS = {"`Correct: ...`": "`正确：...`", "`Not yet: ...`": "`还不对：...`"}


def kept_as_is(english: str, chinese: str, en_path_: Path, zh_path_: Path) -> list[str]:
    """What a translation must carry over unchanged: code blocks (their comments aside), code
    spans, link and image addresses (pointed from the Chinese folder). Each one missing, as a
    line."""
    found = []

    def without_comments(block: str) -> str:
        return "\n".join(re.sub(r"\s*#.*$", "", line) for line in block.splitlines())

    en_blocks = [without_comments(b) for b in FENCE.findall(english)]
    zh_blocks = [without_comments(b) for b in FENCE.findall(chinese)]
    if en_blocks != zh_blocks:
        found.append("a code block differs from the English (beyond its comments)")
    en_text, zh_text = FENCE.sub(" ", english), FENCE.sub(" ", chinese)

    def spans(text: str) -> list[str]:
        found = [" ".join(span.split()) for span in CODE_SPAN.findall(text)]
        return [TRANSLATED_SPANS.get(span, span) for span in found]

    zh_spans = set(spans(zh_text))
    for span in dict.fromkeys(spans(en_text)):
        if span not in zh_spans:
            found.append(f"the English has the code {span}, the translation does not")
    targets = {m[2] for m in LINK.finditer(localize_links(zh_text, en_path_, zh_path_))}
    targets |= {m[2] for m in HTML_LINK.finditer(zh_text)}
    for url in dict.fromkeys(re.findall(URL, localize_links(en_text, en_path_, zh_path_))):
        if url.rstrip(".,;:") not in zh_text:
            found.append(f"the English gives the address {url}, the translation does not")
    for m in LINK.finditer(localize_links(en_text, en_path_, zh_path_)):
        if m[2] not in targets:
            found.append(f"the English links to {m[2]}, the translation does not")
    return found


def problems(chinese: Path) -> list[str]:
    """Everything that keeps ``chinese`` from being the English notebook's faithful twin, one
    line each (stale translations with the English diff below their line)."""
    english = en_path(chinese)
    name = rel(chinese)
    if not english.exists():
        return [f"{name}: there is no English notebook {rel(english)} any more"]
    en = nbformat.read(english, as_version=4)
    zh = nbformat.read(chinese, as_version=4)
    if any("id" not in c for c in en.cells + zh.cells):
        raise Refused(f"{name}: cells without ids (nbformat < 4.5): open and save it in JupyterLab")
    found = []
    en_ids, zh_ids = [c.id for c in en.cells], [c.id for c in zh.cells]
    if [(c.id, c.cell_type) for c in zh.cells] != [(c.id, c.cell_type) for c in en.cells]:
        gone = [i for i in zh_ids if i not in en_ids]
        new = [i for i in en_ids if i not in zh_ids]
        what = (f"new in English: {', '.join(new)}; " if new else "") + (
            f"not in English: {', '.join(gone)}; " if gone else ""
        )
        return [
            f"{name}: its cells are not the English notebook's ({what or 'another order or kind; '}"
            "run tools/zh.py sync)"
        ]
    if zh.metadata != en.metadata:
        found.append(f"{name}: the notebook's metadata differs from the English (run sync)")
    speaks = speaks_chinese(english)
    note = LECTURE_NOTE.read_text(encoding="utf-8") if LECTURE_NOTE.exists() else None
    for en_cell, zh_cell in zip(en.cells, zh.cells, strict=True):
        where = f"{name}, cell {zh_cell.id}"
        done = translation(zh_cell)
        own = {k: v for k, v in zh_cell.metadata.items() if k != "translation"}
        if own != dict(en_cell.metadata) or zh_cell.get("attachments") != en_cell.get(
            "attachments"
        ):
            found.append(f"{where}: its metadata or attachments differ from the English (run sync)")
        if zh_cell.cell_type == "code":
            if not same_code(en_cell.source, zh_cell.source, speaks and is_setup(en_cell)):
                found.append(f"{where}: the code differs from the English beyond its comments")
            if is_solutions(english) and CHECK.match(zh_cell.source.strip()):
                text = "".join(o.get("text", "") for o in zh_cell.get("outputs", []))
                if not text.startswith("正确："):  # tests/test_zh.py runs the check again
                    found.append(f"{where}: the check's stored line is not 正确：... (run sync)")
            elif zh_cell.get("outputs") != en_cell.get("outputs"):
                found.append(f"{where}: the outputs differ from the English (run sync)")
            if zh_cell.get("execution_count") != en_cell.get("execution_count"):
                found.append(f"{where}: the execution count differs from the English (run sync)")
            zh_comments = comments(zh_cell.source)
            english_prose = [
                c for c in zh_comments if is_prose(c) or (CJK.search(c) and ENGLISH_RUN.search(c))
            ]
            if english_prose:
                found.append(f"{where}: comment not translated: # {english_prose[0]}")
            setup = speaks and is_setup(en_cell)
            en_comments = comments(en_cell.source + (LANGUAGE_LINES if setup else ""))
            if len(zh_comments) != len(en_comments):
                found.append(
                    f"{where}: {len(zh_comments)} comments where the English has "
                    f"{len(en_comments)}: translate each one, add none"
                )
            elif [c for c in zh_comments if is_code_put_aside(c)] != [
                c for c in en_comments if is_code_put_aside(c)
            ]:
                found.append(f"{where}: a line of code put aside in a comment differs")
            found += avoided("\n".join(zh_comments), where)
            found += numbers_missing(
                "\n\n".join(en_comments), "\n\n".join(zh_comments), f"{where} (comments)"
            )
        if zh_cell.cell_type == "markdown":
            left = untranslated(zh_cell.source, en_cell.source)
            if left:
                found.append(f"{where}: not translated: {left[0][:100]}")
            if join_chinese_lines(zh_cell.source) != zh_cell.source:
                found.append(
                    f"{where}: a line break or a space between Chinese characters shows as a space "
                    "(import the cell again: tools/zh.py joins such lines)"
                )
            if not left:
                found += terms_missing(en_cell.source, zh_cell.source, where)
                found += numbers_missing(en_cell.source, zh_cell.source, where)
                found += [
                    f"{where}: {line}"
                    for line in kept_as_is(en_cell.source, zh_cell.source, english, chinese)
                ]
                found += shorter_than_the_english(en_cell.source, zh_cell.source, where)
            found += avoided(zh_cell.source, where)
            if note is not None:
                found += quotes_not_in(note, zh_cell.source, where)
        if done and replaced_in_both(done, en_cell.source, zh_cell.source):
            found.append(f"{where}: replaced in both languages since it was recorded (run sync)")
        elif done and sha(done["en"]) != done["en_sha1"]:
            found.append(
                f"{where}: the recorded English was edited, not the translation: the translation "
                "may be stale; export the cell, compare it with the English, import it again"
            )
        elif done and done["en"] != en_cell.source:
            found.append(
                f"{where}: stale, the English changed:\n" + diff_of(done["en"], en_cell.source)
            )
        elif not done and zh_cell.cell_type == "markdown" and not untranslated(zh_cell.source):
            if CJK.search(zh_cell.source):
                found.append(f"{where}: translated, but not marked (import it with tools/zh.py)")
    return found


def shorter_than_the_english(english: str, chinese: str, where: str) -> list[str]:
    """A line if the translation is much shorter than the English: a sentence dropped? (A
    Chinese character carries about half an English word or more; a cell of under 12 words is
    too short to judge.)"""
    words = len(WORD.findall(" ".join(prose_units(english))))
    characters = len(CJK.findall(" ".join(prose_units(chinese))))
    if words >= 12 and characters < SHORTEST * words:
        return [
            f"{where}: {characters} Chinese characters for {words} English words: "
            "is a sentence missing?"
        ]
    return []


def missing() -> list[str]:
    """English notebooks without a Chinese twin."""
    return [
        f"{rel(e)}: no Chinese twin {rel(zh_path(e))}"
        for e in english_notebooks()
        if not zh_path(e).exists()
    ]


# ---------------------------------------------------------------------------------------------
# Export, import


def chinese_twin(path: Path) -> tuple[Path, nbformat.NotebookNode, nbformat.NotebookNode]:
    """``path`` as a Chinese notebook in step with its English one, read: (its path, the English
    notebook, the Chinese one); else ``Refused``."""
    path = path.resolve()
    if path.suffix != ".ipynb" or not path.is_file():
        raise Refused(f"{path}: not a notebook file; give one under {rel(ZH)}/")
    if not path.is_relative_to(ZH):
        raise Refused(f"{path}: not a Chinese notebook; give its twin under {rel(ZH)}/")
    english = en_path(path)
    if not english.exists():
        raise Refused(f"{rel(path)}: there is no English notebook {rel(english)}")
    en = nbformat.read(english, as_version=4)
    zh = nbformat.read(path, as_version=4)
    if [(c.id, c.cell_type) for c in zh.cells] != [(c.id, c.cell_type) for c in en.cells]:
        raise Refused(f"{rel(path)}: its cells are not the English ones: run tools/zh.py sync")
    return path, en, zh


def export(chinese: Path, everything: bool) -> str:
    chinese, en, zh = chinese_twin(chinese)
    blocks = []
    for en_cell, zh_cell in zip(en.cells, zh.cells, strict=True):
        if not needs_translation(en_cell) and not translation(zh_cell):
            continue
        done = translation(zh_cell)
        current = done is not None and done["en"] == en_cell.source
        if current and not everything:
            continue
        head = (
            f"=== {zh_cell.id} {zh_cell.cell_type} {rel(chinese)} en={sha(en_cell.source)[:12]} ==="
        )
        notes = []
        if done and not current:
            notes = ["#| stale: the English changed since the translation below:"]
            notes += ["#| " + line for line in diff_of(done["en"], en_cell.source).splitlines()]
        blocks.append("\n".join([head, *notes, zh_cell.source]))
    return "\n\n".join(blocks) + "\n" if blocks else ""


def import_text(text: str) -> list[str]:
    """Put each block of an export file into its notebook. Everything is checked first, and
    nothing is written if a block is refused; returns the refusals (empty when all went in)."""
    text = text.removeprefix("\ufeff")
    chunks: list[tuple[str, str, str, str | None, list[str]]] = []
    stale: set[int] = set()
    for number, line in enumerate(text.replace("\r\n", "\n").split("\n"), start=1):
        head = BLOCK.match(line)
        if head:
            chunks.append((head[1], head[2], head[3], head[4], []))
        elif line.startswith("==="):
            raise Refused(f"line {number} looks like a block's first line but is not: {line!r}")
        elif chunks and line.startswith("#| stale"):
            stale.add(len(chunks) - 1)
        elif chunks and not line.startswith("#|"):
            chunks[-1][4].append(line)
        elif not chunks and line.strip():
            raise Refused(f"the file must start with a === line; line {number} is {line!r}")
    if not chunks:
        raise Refused("the file holds no block (=== <cell id> <kind> <notebook> ===)")
    refused: list[str] = []
    twins: dict[str, tuple[Path, nbformat.NotebookNode, nbformat.NotebookNode] | Refused] = {}
    for index, (cell_id, kind, notebook, en_hash, lines) in enumerate(chunks):
        body = "\n".join(lines).strip("\n")
        if index in stale:
            refused.append(
                f"{notebook}, cell {cell_id}: still marked stale; translate the English change "
                "shown in its #| lines, delete those lines, then import"
            )
            continue
        if not en_hash:
            refused.append(
                f"{notebook}, cell {cell_id}: the block does not say which English it translates "
                "(en=...); export the cell and put the translation in that block"
            )
            continue
        if notebook not in twins:  # each notebook read once, whatever the number of its blocks
            try:
                twins[notebook] = chinese_twin(ROOT / notebook)
            except Refused as why:
                twins[notebook] = why
        twin = twins[notebook]
        if isinstance(twin, Refused):
            refused.append(str(twin))
            continue
        chinese, en_notebook, zh = twin
        english = en_path(chinese)
        en = {c.id: c for c in en_notebook.cells}
        cells = {c.id: c for c in zh.cells}
        if cell_id not in cells or cells[cell_id].cell_type != kind:
            refused.append(f"{notebook}: no {kind} cell {cell_id}")
            continue
        source = en[cell_id].source
        if not sha(source).startswith(en_hash):
            refused.append(
                f"{notebook}, cell {cell_id}: the English changed since this file was exported; "
                "export the cell again and translate the change"
            )
            continue
        if not body.strip():
            refused.append(f"{notebook}, cell {cell_id}: the block is empty")
            continue
        if kind == "code" and not same_code(
            source, body, speaks_chinese(english) and is_setup(en[cell_id])
        ):
            refused.append(f"{notebook}, cell {cell_id}: the code changed, not only comments")
            continue
        if kind == "markdown":
            body = join_chinese_lines(localize_links(body, english, chinese))
        cells[cell_id].source = body
        mark(cells[cell_id], source)
    if refused:
        return refused
    for twin in twins.values():
        chinese, _, zh = twin  # no twin was refused: nothing was
        nbformat.write(zh, chinese)
    return []


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("sync", help="rebuild code and outputs from the English notebooks")
    sub.add_parser("status", help="list stale and untranslated cells")
    ex = sub.add_parser("export", help="the cells to translate, as text")
    ex.add_argument("notebook", type=Path)
    ex.add_argument("--all", action="store_true", help="translated cells too")
    im = sub.add_parser("import", help="put translated text back")
    im.add_argument("file", type=Path)
    args = parser.parse_args()
    try:
        if args.command == "sync":
            sync()
            args.command = "status"
        if args.command == "status":
            found = missing() + [p for z in chinese_notebooks() for p in problems(z)]
            print(
                "\n".join(found) if found else "every Chinese notebook is in step with the English"
            )
            return 1 if found else 0
        if args.command == "export":
            text = export(args.notebook, args.all)
            sys.stdout.write(text)
            if not text:
                print(
                    f"{args.notebook}: nothing to translate (--all gives every cell)",
                    file=sys.stderr,
                )
            return 0
        try:
            text = args.file.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise Refused(f"{args.file}: not UTF-8 text; save it as UTF-8") from None
        refused = import_text(text)
    except Refused as why:
        print(f"tools/zh.py: {why}", file=sys.stderr)
        return 2
    except (OSError, ValueError) as error:  # a missing file, a damaged notebook
        print(f"tools/zh.py: {error}", file=sys.stderr)
        return 2
    for line in refused:
        print(line, file=sys.stderr)
    if refused:
        print("nothing was imported: fix these blocks and import the file again", file=sys.stderr)
    return 1 if refused else 0


if __name__ == "__main__":
    sys.exit(main())
