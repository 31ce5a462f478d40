"""Checks of the notebooks as committed: real full-run outputs, clean metadata, a proper header.

tests/test_lessons.py runs each lesson once under nbval; these tests read the
stored files without running them.
"""

import re
from pathlib import Path

import nbformat
import pytest

from cifar_course import REPO_URL

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("[0-9][0-9]_*.ipynb"))
# The lessons and their exercise and solution notebooks: the hygiene checks hold for all of them.
EVERY_NOTEBOOK = (
    NOTEBOOKS
    + sorted(
        (Path(__file__).resolve().parents[1] / "notebooks" / "exercises").rglob(
            "[0-9][0-9]_*.ipynb"
        )
    )
    # the Chinese edition (tests/test_zh.py checks it against the English)
    + sorted((Path(__file__).resolve().parents[1] / "notebooks" / "zh").rglob("[0-9][0-9]_*.ipynb"))
)
WIDGET = "application/vnd.jupyter.widget-view+json"


def notebook_id(path: Path) -> str:
    """A notebook's path under notebooks/, as its tests are named: "zh/exercises/01_..."."""
    return path.relative_to(Path(__file__).resolve().parents[1] / "notebooks").as_posix()


EXPECTED = [
    "01_sequential_model",
    "02_save_and_load",
    "03_training_loop",
    "04_gpu_vs_cpu",
    "05_inference",
    "06_faster_and_better",
    "07_multiple_gpus",
    "08_speedrun",
]


def read(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(path, as_version=4)


def text_of(cell) -> str:
    parts = []
    for output in cell.get("outputs", []):
        parts.append(output.get("text", ""))
        parts.append(str(output.get("data", {}).get("text/plain", "")))
    return "".join(parts)


def test_all_lessons_exist_in_reading_order():
    assert [p.stem for p in NOTEBOOKS][: len(EXPECTED)] == EXPECTED


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_header(path):
    first = read(path).cells[0]
    assert first.cell_type == "markdown"
    for needed in ("You will learn", "Run time on a CPU", "Run time on a GPU", "Stored outputs"):
        assert needed in first.source, needed
    badge = f"colab.research.google.com/github/{REPO_URL.removeprefix('https://github.com/')}"
    assert f"{badge}/blob/main/notebooks/{path.name}" in first.source


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_no_placeholder_left_unfilled(path):
    # measured figures go into the text as @NAME@ while a full run is pending
    for cell in read(path).cells:
        assert not re.search(r"@[A-Z_]+@", cell.source), cell.source[:80]


@pytest.mark.parametrize(
    "path",
    EVERY_NOTEBOOK,
    ids=notebook_id,
)
def test_setup_cell_installs_only_on_colab(path):
    setup = read(path).cells[1]
    assert f'REPO_URL = "{REPO_URL}"' in setup.source
    assert 'if "google.colab" in sys.modules:' in setup.source
    assert "git clone" not in setup.source


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_stored_outputs_come_from_a_full_run(path):
    nb = read(path)
    code = [c for c in nb.cells if c.cell_type == "code"]
    mode_cells = [c for c in code if "MODE = " in c.source and "smoke_mode()" in c.source]
    assert len(mode_cells) == 1
    assert "mode: full" in text_of(mode_cells[0])
    # executed top to bottom in one fresh kernel: execution counts run 1, 2, 3, ...
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_errors_only_where_expected(path):
    for cell in read(path).cells:
        if cell.cell_type != "code":
            continue
        errors = [o for o in cell.outputs if o.output_type == "error"]
        expected = "raises-exception" in cell.metadata.get("tags", [])  # nbval expects these
        assert bool(errors) == expected, cell.source[:80]
        for output in cell.outputs:
            if output.output_type == "stream" and output.name == "stderr":
                assert "Traceback" not in output.text and "Warning" not in output.text


@pytest.mark.parametrize(
    "path",
    EVERY_NOTEBOOK,
    ids=notebook_id,
)
def test_no_noisy_metadata(path):
    nb = read(path)
    assert "widgets" not in nb.metadata
    for cell in nb.cells:
        assert "execution" not in cell.metadata
        for output in cell.get("outputs", []):
            assert WIDGET not in output.get("data", {})


# --- what a learner meets when opening a stored notebook -------------------------------------

JUPYTERLAB_KERNELSPEC = {
    "display_name": "Python 3 (ipykernel)",
    "language": "python",
    "name": "python3",
}
ANSI = re.compile(r"\x1b\[")
# An absolute path of the machine that ran the notebook: its home, temp or system folders, a
# virtual environment's site-packages, or this checkout itself.
MACHINE_PATH = re.compile(
    r"(?<![\w.])/(?:home|root|tmp|Users|usr|opt|var|work|content|private)/[\w.-]"
    r"|site-packages|dist-packages|[A-Za-z]:\\\\"
)
MAX_TRACEBACK_LINES = 12
NBVAL_TAGS = {"nbval-check-output", "nbval-ignore-output", "nbval-skip", "raises-exception"}


def output_texts(cell) -> list[str]:
    """Every piece of text a learner can see in a cell's stored outputs, tracebacks included."""
    texts = []
    for output in cell.get("outputs", []):
        texts.append(output.get("text", ""))
        texts.extend(str(v) for k, v in output.get("data", {}).items() if k.startswith("text/"))
        texts.extend(output.get("traceback", []))
        texts.append(output.get("evalue", ""))
    return texts


@pytest.mark.parametrize(
    "path",
    EVERY_NOTEBOOK,
    ids=notebook_id,
)
def test_kernelspec_is_what_jupyterlab_writes(path):
    # anything else and JupyterLab rewrites it on opening: the notebook opens already "modified"
    assert read(path).metadata.kernelspec == JUPYTERLAB_KERNELSPEC


@pytest.mark.parametrize(
    "path",
    EVERY_NOTEBOOK,
    ids=notebook_id,
)
def test_stored_outputs_show_no_machine_paths_colour_codes_or_long_tracebacks(path):
    repo = str(Path(__file__).resolve().parents[1])
    for index, cell in enumerate(read(path).cells):
        for text in output_texts(cell):
            where = f"cell {index}: {text[:120]!r}"
            assert repo not in text and not MACHINE_PATH.search(text), where
            assert not ANSI.search(text), where
            assert "\r" not in text, where  # progress-bar updates: run tools/clean_notebooks.py
        for output in cell.get("outputs", []):
            if output.output_type == "error":
                lines = "\n".join(output.traceback).splitlines()
                assert len(lines) <= MAX_TRACEBACK_LINES, f"cell {index}: {len(lines)} lines"


@pytest.mark.parametrize(
    "path",
    EVERY_NOTEBOOK,
    ids=notebook_id,
)
def test_test_plumbing_is_in_tags_not_in_the_code(path):
    for cell in read(path).cells:
        assert "NBVAL" not in cell.source, cell.source[:80]
        for tag in cell.metadata.get("tags", []):
            # nbval only knows its lower-case tags; any other spelling silently checks nothing
            assert tag in NBVAL_TAGS, tag


def ordered_list_runs(markdown: str) -> list[list[int]]:
    """The numbers of each run of consecutive ordered-list lines at one indentation."""
    runs: list[list[int]] = []
    previous_indent = None
    in_code = False
    for line in markdown.splitlines():
        if line.lstrip().startswith("```"):
            in_code = not in_code
        match = None if in_code else re.match(r"^(\s*)(\d+)\.\s", line)
        if match:
            indent = len(match.group(1))
            if indent == previous_indent:
                runs[-1].append(int(match.group(2)))
            else:
                runs.append([int(match.group(2))])
            previous_indent = indent
        elif line.strip() and not line.startswith(" "):
            previous_indent = None
    return runs


def test_ordered_list_runs_sees_a_list_that_markdown_would_renumber():
    assert ordered_list_runs("- steps:\n  1. ReLU, 2. BatchNorm,\n  5. a schedule, 6. TTA") == [
        [1, 5]
    ]
    assert ordered_list_runs("1. a\n2. b\n\ntext\n\n1. c") == [[1, 2], [1]]


@pytest.mark.parametrize(
    "path",
    EVERY_NOTEBOOK,
    ids=notebook_id,
)
def test_numbered_lists_render_with_the_numbers_written(path):
    # Markdown numbers a list from its first item on: "1. ..." then "5. ..." renders as "1." "2."
    for cell in read(path).cells:
        if cell.cell_type == "markdown":
            for run in ordered_list_runs(cell.source):
                assert run == list(range(run[0], run[0] + len(run))), (run, cell.source[:80])


@pytest.mark.parametrize(
    "path",
    EVERY_NOTEBOOK,
    ids=notebook_id,
)
def test_no_path_into_this_repository(path):
    # the notebook runs from any folder with only the installed package, as on Colab
    for cell in read(path).cells:
        if cell.cell_type == "code":
            assert not re.search(
                r"""["'](\.\./|images/[\w-]+\.|notebooks/|tools/|tests/)""", cell.source
            )


@pytest.mark.parametrize(
    "path",
    EVERY_NOTEBOOK,
    ids=notebook_id,
)
def test_sizes_are_chosen_in_one_place(path):
    # a full run and the tests' smoke run differ only in by_mode's answers, never in the code path
    for cell in read(path).cells:
        if cell.cell_type == "code":
            assert not re.search(r"MODE\s*[!=]=", cell.source), cell.source[:80]


@pytest.mark.parametrize("path", NOTEBOOKS[:-1], ids=lambda p: p.stem)
def test_every_lesson_but_the_last_ends_with_a_link_to_the_next(path):
    following = NOTEBOOKS[NOTEBOOKS.index(path) + 1]
    number = following.name[:2]
    last_cells = "\n".join(c.source for c in read(path).cells[-3:] if c.cell_type == "markdown")
    assert f"Next: [lesson {number}]({following.name})" in last_cells


# Words that tell how the course was made (who wrote it, in which sitting, what was lent or
# lacked at the time): learner-facing text speaks of the course alone.
HOW_IT_WAS_MADE = re.compile(
    r"\blent\b|\blending\b|\bsitting\b|\bwho wrote\b|\bwrote this\b|\bwritten after\b"
    r"|\b(?:GPU|earlier|later|previous|next|first|second|writing) sessions?\b"
    r"|\bsession that\b|\b(?:was|were) written (?:before|during|when|in)\b"
    r"|\bthis (?:lesson|notebook|course) was (?:made|written)\b|\brerun lacked\b",
    re.IGNORECASE,
)
LINK_TARGET = re.compile(r"\]\([^)\s]*\)")  # an address is not prose


def learner_text() -> list[tuple[str, str]]:
    """(where, text) of everything a learner reads: the notebooks' markdown, the README, and
    the exercises' messages, hints and solutions in the package."""
    root = Path(__file__).resolve().parents[1]
    found = [
        (f"{path.name} cell {i}", cell.source)
        for path in EVERY_NOTEBOOK
        for i, cell in enumerate(read(path).cells)
        if cell.cell_type == "markdown"
    ]
    found.append(("README.md", (root / "README.md").read_text()))
    sources = root / "cifar_course" / "images" / "SOURCES.md"  # the lessons link it
    found.append(("cifar_course/images/SOURCES.md", sources.read_text()))
    for module in sorted((root / "cifar_course" / "exercises").glob("*.py")):
        found.append((f"cifar_course/exercises/{module.name}", module.read_text()))
    return found


def test_learner_facing_text_never_says_how_the_course_was_made():
    hits = [
        (where, match.group(0), text[max(0, match.start() - 60) : match.end() + 60])
        for where, text in learner_text()
        for match in HOW_IT_WAS_MADE.finditer(LINK_TARGET.sub("]()", text))
    ]
    assert not hits, hits


def test_the_guard_against_words_about_how_the_course_was_made_catches_them():
    for phrase in (
        "no GPU was lent to the session that wrote this lesson",
        "a rerun lacked the data",
        "written after that GPU session",
        "In this sitting we measured",
    ):
        assert HOW_IT_WAS_MADE.search(phrase), phrase
    for phrase in (
        "add_safe_globals allows them for the rest of the session",
        "torch.distributed's process group",
        "a warm-up run",
    ):
        assert not HOW_IT_WAS_MADE.search(phrase), phrase


def tracked_files(root: Path) -> set[Path] | None:
    """The files git tracks (what GitHub shows), or None outside a git checkout."""
    import subprocess

    done = subprocess.run(["git", "ls-files"], cwd=root, capture_output=True, text=True)
    if done.returncode != 0:
        return None
    return {(root / line).resolve() for line in done.stdout.splitlines()}


LINKED = [
    *EVERY_NOTEBOOK,
    Path(__file__).resolve().parents[1] / "README.md",
    Path(__file__).resolve().parents[1] / "README.zh-CN.md",
]


def relative_links(path: Path) -> list[str]:
    """The relative targets (``file#anchor``) of the markdown links and images of ``path``, a
    notebook (its markdown cells) or a markdown file."""
    texts = (
        [c.source for c in read(path).cells if c.cell_type == "markdown"]
        if path.suffix == ".ipynb"
        else [path.read_text()]
    )
    return [
        target
        for text in texts
        for target in re.findall(r"\]\(([^)\s]+)\)", text)
        if not re.match(r"[a-z]+:|#", target)
    ]


@pytest.mark.parametrize("path", LINKED, ids=lambda p: p.stem)
def test_every_relative_link_opens_on_github_and_in_make_lab(path):
    """A relative link must name a file that git tracks (GitHub resolves it there, and
    `make lab` serves the whole repository; tests/test_lab.py asks the real server), not one a
    run leaves behind, and an anchor into a markdown file must name one of its headings."""
    root = Path(__file__).resolve().parents[1]
    tracked = tracked_files(root)
    for target in relative_links(path):
        file, _, anchor = target.partition("#")
        resolved = (path.parent / file).resolve()
        assert resolved.is_relative_to(root) and resolved.exists(), target
        if tracked is not None and resolved.is_file():
            assert resolved in tracked, f"{target} is not tracked by git"
        if tracked is not None and resolved.is_dir():
            assert any(f.is_relative_to(resolved) for f in tracked), target
        if anchor and resolved.suffix == ".md":
            slugs = {
                re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
                for heading in re.findall(r"^#+ (.*)$", resolved.read_text(), re.MULTILINE)
            }
            assert anchor in slugs, target


@pytest.mark.parametrize("path", EVERY_NOTEBOOK, ids=lambda p: p.stem)
def test_no_empty_stderr_band_is_stored(path):
    """A progress bar on stderr that clears itself leaves an empty pink band in JupyterLab, and
    in the saved file: no stored stderr output may be blank once carriage returns are applied."""
    for i, cell in enumerate(read(path).cells):
        for output in cell.get("outputs", []):
            if output.get("name") == "stderr":
                shown = [line.split("\r")[-1] for line in output.get("text", "").split("\n")]
                assert any(line.strip() for line in shown), f"cell {i}: a blank stderr band"
