"""Every lesson runs as it does on Colab: the notebook alone, in an empty folder, with only the
package installed from its wheel.

The wheel is built from this checkout and installed with ``pip --target`` into a folder outside
it; the kernel gets that folder on ``PYTHONPATH``, which Python searches before the editable
install of the development environment. Each notebook is copied into its own empty folder and
executed there by a real Jupyter kernel (nbclient), in smoke mode. A cell appended for the test
proves which copy of ``cifar_course`` the kernel imported.
"""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
WIDGET = "application/vnd.jupyter.widget-view+json"
WHERE = "import cifar_course\nprint('cifar_course imported from', cifar_course.__file__)"


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
    path, installed, tmp_path, data_root
):
    folder = tmp_path / "colab"
    folder.mkdir()
    nb = nbformat.read(path, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(WHERE))
    nbformat.write(nb, folder / path.name)  # the notebook alone, as Colab opens it

    env = dict(os.environ, PYTHONPATH=str(installed), CIFAR_COURSE_SMOKE="1")
    env["CIFAR_COURSE_DATA"] = str(data_root)
    client = NotebookClient(
        nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(folder)}}
    )
    client.execute(env=env)  # raises CellExecutionError, with the cell, if any cell fails

    where = nb.cells[-1].outputs[0].text
    assert where.startswith(f"cifar_course imported from {installed}"), where
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            # progress bars must stay text: a widget would leave "model not found" on reopening
            assert WIDGET not in output.get("data", {}), cell.source[:80]
