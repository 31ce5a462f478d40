"""Checks of the notebooks as committed: real full-run outputs, clean metadata, a proper header.

nbval executes the notebooks themselves (see the Makefile's test target); these tests read the
stored files without running them.
"""

import re
from pathlib import Path

import nbformat
import pytest

from cifar_course import REPO_URL

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("[0-9][0-9]_*.ipynb"))
WIDGET = "application/vnd.jupyter.widget-view+json"
EXPECTED = [
    "01_sequential_model",
    "02_save_and_load",
    "03_training_loop",
    "04_gpu_vs_cpu",
    "05_inference",
    "06_faster_and_better",
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


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
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


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_no_noisy_metadata(path):
    nb = read(path)
    assert "widgets" not in nb.metadata
    for cell in nb.cells:
        assert "execution" not in cell.metadata
        for output in cell.get("outputs", []):
            assert WIDGET not in output.get("data", {})
