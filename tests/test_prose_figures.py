"""Every headline figure in a lesson's prose is traceable: to a stored output, or to a named source.

The figures are accuracies and other percentages, speed-up ratios, file sizes, large counts
(parameters, bytes, images per second) and run times. For each one in a markdown cell, one of these
must hold:

1. a stored output of the same notebook shows it (to the precision the prose gives);
2. the same paragraph, table row or list item names where it comes from, and that source shows it:
   another lesson ("lesson 03"), or a file under ``benchmarks/`` or the README, given as a link;
3. the paragraph names an outside source that no test can read: the lecture, or a paper;
4. it is listed in ``NOT_MEASURED`` below with the reason it is no measurement (a definition, or
   arithmetic on figures shown next to it).

So when a re-run changes an output, the prose that quotes the old figure fails here.
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))

NUMBER = r"\d{1,3}(?:,\d{3})+|\d+(?:\.\d+)?"
FIGURE = re.compile(
    rf"(?:(?P<low>{NUMBER})\s?[–-]\s?)?"  # the lower end of a range, "17–28%"
    rf"(?P<value>{NUMBER})"
    r"(?:\s?(?P<unit>%|×(?!\d)|MiB|MB|kB|GB|GiB|bytes|B\b|images/s|parameters|min\b|s\b))"
)
BIG = re.compile(r"\b\d{1,3}(?:,\d{3})+\b")  # 145,578 or 553,451,687: counts and sizes
MINUTES = re.compile(r"(\d+) min (\d+) s")

# Outside sources that the paragraph names and no test can read.
EXTERNAL = re.compile(r"the lecture|arXiv:|airbench", re.IGNORECASE)
LESSON = re.compile(r"lesson (0\d)")
LINKED_FILE = re.compile(r"\((?:\.\./)?((?:benchmarks/[^)\s#]*)|README\.md)(?:#[^)\s]*)?\)")

# Figures that are no measurement, each with its reason.
ANY_LESSON = {
    "50,000": "the size of CIFAR-10's training set",
    "10,000": "the size of CIFAR-10's test set",
}
NOT_MEASURED: dict[str, dict[str, str]] = {
    "01_sequential_model": {},
    "02_save_and_load": {},
    "03_training_loop": {
        "10%": "chance: one class in ten",
    },
    "04_gpu_vs_cpu": {
        "150 MB": "50,000 images of 3,072 bytes: arithmetic",
    },
    "05_inference": {},
    "06_faster_and_better": {
        "55%": "the lecture net's accuracy, rounded (step 0 and lessons 03 and 05 show it)",
        "90%": "the lesson's target, rounded",
        "94%": "the speed runs' target",
        "20%": "the warm-up fraction of the schedule, a setting in cifar_course.augment",
        "82%": "label smoothing's target for the true class: the formula beside it",
        "2%": "label smoothing's target for each other class: the formula beside it",
        "88%": "the assertion bound of the cell below it",
        "14%": "720 s against 632 s, both shown: arithmetic",
        "64 MiB": "512 × 32 × 32 × 32 float32 values: arithmetic",
        "32 MiB": "glibc's default mmap threshold",
    },
    "07_multiple_gpus": {},
    "08_speedrun": {
        "94%": "the speed-runs' target",
        "5,000": "how many training images the whitening uses, a setting (speedrun.WHITEN_IMAGES)",
        "1,000": "how many test images the whitening check uses, a setting in the cell below it",
        "23%": "the warm-up share of the schedule, a setting (speedrun.WARMUP)",
        "20%": "lesson 06's warm-up share, a setting in cifar_course.augment",
        "92%": "the course's CPU goal for the speed-run (issue 16), not a result",
        "0.1%": "the weight decay per step: speedrun.WEIGHT_DECAY x 512, a setting",
        "7%": "where the schedule ends, a setting (speedrun.LR_END)",
    },
}


def read(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(path, as_version=4)


def outputs_text(path: Path) -> str:
    parts = []
    for cell in read(path).cells:
        for output in cell.get("outputs", []):
            parts.append(output.get("text", ""))
            parts.append(str(output.get("data", {}).get("text/plain", "")))
    return "\n".join(parts)


def units(markdown: str) -> list[str]:
    """Paragraphs, list items and table rows: the span within which a figure names its source."""
    found = []
    previous = ""
    for block in re.split(r"\n\s*\n", markdown):
        if block.lstrip().startswith("|"):  # a row, with the paragraph that introduces the table
            found.extend(f"{row}\n{previous}" for row in block.splitlines())
        else:
            found.extend(re.split(r"\n(?=\s*- )", block))
        previous = block
    return found


def as_float(text: str) -> float:
    return float(text.replace(",", ""))


def decimals(text: str) -> int:
    return len(text.split(".")[1]) if "." in text else 0


def shown_in(value: str, unit: str | None, text: str) -> bool:
    """Whether ``text`` shows ``value``, a figure from prose, to the precision the prose gives."""
    target = as_float(value)
    if unit == "min":
        seconds = [int(m) * 60 + int(s) for m, s in MINUTES.findall(text)]
        seconds += [int(m) * 60 for m in re.findall(r"(\d+) min\b(?! \d+ s)", text)]
        seconds += [as_float(n) for n in re.findall(rf"({NUMBER}) s\b", text)]
        return any(abs(s - 60 * target) <= 30 for s in seconds)
    places = decimals(value)
    candidates = [as_float(n) for n in re.findall(NUMBER, text)]
    if unit == "s":
        candidates += [int(m) * 60 + int(s) for m, s in MINUTES.findall(text)]
    return any(round(n, places) == target for n in candidates)


def figures(markdown: str) -> list[tuple[str, str, str | None, str]]:
    """``(figure as written, value, unit, the unit of text around it)`` for each figure."""
    found = []
    for unit_text in units(markdown):
        clean = re.sub(r"`[^`]*`|\]\([^)]*\)|\b\d{4}-\d\d-\d\d\b", " ", unit_text)
        clean = re.sub(r"(?<![\d.,])\d+(?:\.\d+)+(?:\+\w+)?\b(?!\s?(?:%|×|s\b|MiB|MB))", " ", clean)
        taken = set()
        for match in FIGURE.finditer(clean):
            value, unit = match.group("value"), match.group("unit")
            if unit in ("s", "min") and re.search(r"\d+ min $", clean[: match.start("value")]):
                continue  # the seconds of "4 min 45 s", checked with its minutes
            if unit == "min" and clean[match.end() : match.end() + 6].strip().startswith(
                tuple("0123456789")
            ):
                seconds = re.match(r"\s*(\d+) s", clean[match.end() :])
                if seconds:
                    value = str(int(value) + int(seconds.group(1)) / 60)
            found.append((match.group(0).strip(), value, unit, unit_text))
            if match.group("low"):
                found.append((match.group("low"), match.group("low"), unit, unit_text))
            taken.update(range(match.start(), match.end()))
        for match in BIG.finditer(clean):
            if match.start() not in taken:
                found.append((match.group(0), match.group(0), None, unit_text))
    return found


def sources_for(unit_text: str) -> list[str]:
    """The texts of the sources a paragraph names: other lessons' outputs and linked files."""
    texts = []
    for number in LESSON.findall(unit_text):
        texts += [outputs_text(p) for p in NOTEBOOKS if p.name.startswith(number)]
    for name in LINKED_FILE.findall(unit_text):
        path = ROOT / name
        files = sorted(path.rglob("*")) if path.is_dir() else [path]
        texts += [f.read_text() for f in files if f.is_file()]
    return texts


def untraced(path: Path) -> list[str]:
    own = outputs_text(path)
    exempt = NOT_MEASURED[path.stem] | ANY_LESSON
    problems = []
    for cell in read(path).cells:
        if cell.cell_type != "markdown":
            continue
        for written, value, unit, unit_text in figures(cell.source):
            if written in exempt or shown_in(value, unit, own):
                continue
            if any(shown_in(value, unit, text) for text in sources_for(unit_text)):
                continue
            if EXTERNAL.search(unit_text):
                continue
            problems.append(f"{written!r} in: {unit_text.strip()[:100]!r}")
    return problems


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_figure_in_the_prose_is_traceable(path):
    problems = untraced(path)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_exemption_is_still_used(path):
    written = {
        f[0]
        for cell in read(path).cells
        if cell.cell_type == "markdown"
        for f in figures(cell.source)
    }
    assert set(NOT_MEASURED[path.stem]) <= written


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_the_header_run_time_is_the_stored_run_time(path):
    """The last cell prints the run time; a notebook stored before it had one names its record."""
    nb = read(path)
    row = next(line for line in nb.cells[0].source.splitlines() if "Run time on a CPU" in line)
    stored = [
        output.text
        for cell in nb.cells
        if cell.cell_type == "code"
        and "format_duration(time.perf_counter() - started)" in cell.source
        for output in cell.outputs
        if output.output_type == "stream"
    ]
    if not stored:  # the figure itself is checked against that record by the test above
        assert "(../benchmarks/README.md)" in row, row
        return
    measured = stored[0].split("run time of this notebook:")[1].strip()
    assert f"| {measured} on the 2-core CPU" in row, (measured, row)


def test_the_guard_catches_a_figure_that_changed_in_the_output_only(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell("The run reaches 57.13% after 10 epochs, 4.7× the rest."),
        nbformat.v4.new_code_cell("print(accuracy)"),
    ]
    nb.cells[1].outputs = [nbformat.v4.new_output("stream", name="stdout", text="57.13% 4.71\n")]
    path = tmp_path / "01_sequential_model.ipynb"
    nbformat.write(nb, path)
    assert untraced(path) == []
    nb.cells[1].outputs[0].text = "56.90% 4.71\n"  # a re-run changed the output, not the prose
    nbformat.write(nb, path)
    assert untraced(path) == [
        "'57.13%' in: 'The run reaches 57.13% after 10 epochs, 4.7× the rest.'"
    ]


def test_the_guard_follows_a_named_source_and_checks_it(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell(
            "On an H100: 191,758 images/s "
            "(source: [log](../benchmarks/2026-11-27-h100/benchmark.log))."
        )
    ]
    path = tmp_path / "01_sequential_model.ipynb"
    nbformat.write(nb, path)
    assert untraced(path) == []
    nb.cells[0].source = nb.cells[0].source.replace("191,758", "191,759")
    nbformat.write(nb, path)
    assert len(untraced(path)) == 1
