"""Every lesson runs as it does on Colab: the notebook alone, in an empty folder, with only the
package installed from its wheel.

The wheel is built from this checkout and installed with ``pip --target`` into a folder outside
it; the kernel gets that folder on ``PYTHONPATH``, which Python searches before the editable
install of the development environment. Each notebook is copied into its own empty folder and
executed there by a real Jupyter kernel (nbclient), in smoke mode. A cell appended for the test
proves which copy of ``cifar_course`` the kernel imported.
"""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
WIDGET = "application/vnd.jupyter.widget-view+json"


def test_the_wheel_carries_the_lesson_photographs(installed):
    images = installed / "cifar_course" / "images"
    assert sorted(p.name for p in images.glob("*.jpg")) + sorted(
        p.name for p in images.glob("*.png")
    ) == [
        "airplane.jpg",
        "automobile.jpg",
        "bird.jpg",
        "deer.jpg",
        "dog.jpg",
        "frog.jpg",
        "horse.jpg",
        "cat.png",
        "ship.png",
    ]
    assert (images / "SOURCES.md").is_file()


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_from_an_empty_folder_with_only_the_installed_package(
    path, run_alone, tmp_path
):
    nb = run_alone(path, tmp_path / "colab")  # raises CellExecutionError if any cell fails
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            # progress bars must stay text: a widget would leave "model not found" on reopening
            assert WIDGET not in output.get("data", {}), cell.source[:80]
