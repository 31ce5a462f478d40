"""Every lesson runs once, top to bottom, as it runs on Colab, and that run is the nbval run.

Each lesson is copied alone into an empty folder and executed there by nbval (``--nbval-lax``:
every cell must run; the cells tagged ``nbval-check-output`` must print what the stored full run
printed, after ``nbval_sanitize.cfg``), in a kernel that finds only the package installed from
this checkout's wheel (``installed``, first on ``PYTHONPATH``), in smoke mode. A cell appended to
the copy proves which ``cifar_course`` the kernel imported. One nbval process per lesson, so that
``--durations`` shows each lesson's time.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LESSONS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
SANITIZE = Path(__file__).with_name("nbval_sanitize.cfg")
# The appended cell: the kernel imported the wheel's copy, and no progress bar became a Jupyter
# widget (a widget's output would leave "model not found" when the notebook is opened again).
WHERE = (
    "import os\nimport sys\n\nimport cifar_course\n\n"
    "assert cifar_course.__file__.startswith(os.environ['COURSE_WHEEL_SITE']), "
    "cifar_course.__file__\n"
    "assert 'ipywidgets' not in sys.modules"
)


def alone(path: Path, folder: Path) -> Path:
    """A copy of the notebook at ``path`` alone in ``folder``, with the import check appended."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(WHERE))
    folder.mkdir(parents=True)
    nbformat.write(nb, folder / path.name)
    return folder / path.name


def nbval(copy: Path, site: Path, data: Path) -> subprocess.CompletedProcess[str]:
    """nbval on ``copy`` in a pytest of its own, rooted in the copy's folder (so that none of
    this checkout's conftest or settings applies), with the installed wheel first on the path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}  # not ours
    env.update(PYTHONPATH=str(site), COURSE_WHEEL_SITE=str(site))
    env.update(CIFAR_COURSE_SMOKE="1", CIFAR_COURSE_DATA=str(data))
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval-lax"]
    command += ["--nbval-current-env", "--nbval-sanitize-with", str(SANITIZE)]
    command += ["--nbval-cell-timeout=900"]
    command += ["--rootdir", str(copy.parent), "-c", os.devnull, str(copy)]
    return subprocess.run(
        command, cwd=copy.parent, env=env, capture_output=True, text=True, timeout=1800
    )


@pytest.mark.notebooks
@pytest.mark.slow
@pytest.mark.parametrize(
    "path",
    # lesson 07 starts real torchrun processes
    [pytest.param(p, marks=pytest.mark.distributed) if "07_" in p.name else p for p in LESSONS],
    ids=lambda p: p.stem,
)
def test_the_lesson_runs_alone_with_the_installed_wheel_and_prints_what_its_full_run_printed(
    path, installed, data_root, tmp_path
):
    done = nbval(alone(path, tmp_path / "colab"), installed, data_root)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    assert " passed" in done.stdout and "failed" not in done.stdout


@pytest.mark.notebooks
@pytest.mark.slow
@pytest.mark.parametrize(("stored", "fails"), [("epochs 12\n", True), ("epochs 10\n", False)])
def test_the_nbval_run_fails_a_lesson_that_prints_other_than_its_full_run(
    installed, data_root, tmp_path, stored, fails
):
    """The comparison can fail: a checked cell whose stored output differs from what it prints
    fails, and the same cell with the output it prints passes."""
    import nbformat

    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell(
        "print('epochs', 10)", metadata={"tags": ["nbval-check-output"]}, execution_count=1
    )
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=stored)]
    nb.cells = [cell]
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nbformat.write(nb, tmp_path / "changed.ipynb")
    done = nbval(alone(tmp_path / "changed.ipynb", tmp_path / "colab"), installed, data_root)
    assert (done.returncode != 0) is fails, done.stdout[-3000:]
    assert ("mismatch 'stdout'" in done.stdout) is fails


def test_the_wheel_carries_the_lesson_photographs_and_their_credits(installed):
    """Lesson 05 finds its photographs wherever the package is installed, on Colab too."""
    images = installed / "cifar_course" / "images"
    jpgs, pngs = sorted(images.glob("*.jpg")), sorted(images.glob("*.png"))
    assert [p.name for p in jpgs + pngs] == [
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
