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
WHERE = (
    "import os\n\nimport cifar_course\n\n"
    "assert cifar_course.__file__.startswith(os.environ['COURSE_WHEEL_SITE']), "
    "cifar_course.__file__"
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
    env = dict(os.environ, PYTHONPATH=str(site), COURSE_WHEEL_SITE=str(site))
    env.update(CIFAR_COURSE_SMOKE="1", CIFAR_COURSE_DATA=str(data))
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval-lax"]
    command += ["--nbval-current-env", "--nbval-sanitize-with", str(SANITIZE)]
    command += ["--rootdir", str(copy.parent), "-c", os.devnull, str(copy)]
    return subprocess.run(command, cwd=copy.parent, env=env, capture_output=True, text=True)


@pytest.mark.notebooks
@pytest.mark.slow
@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.stem)
def test_the_lesson_runs_alone_with_the_installed_wheel_and_prints_what_its_full_run_printed(
    path, installed, data_root, tmp_path
):
    done = nbval(alone(path, tmp_path / "colab"), installed, data_root)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    assert " passed" in done.stdout and "failed" not in done.stdout


@pytest.mark.slow
def test_a_lesson_that_prints_other_than_its_full_run_fails_its_nbval_run(
    installed, data_root, tmp_path
):
    """The comparison can fail: a checked cell whose stored output was changed fails."""
    import nbformat

    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell(
        "print('epochs', 10)", metadata={"tags": ["nbval-check-output"]}
    )
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="epochs 12\n")]
    nb.cells = [cell]
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nbformat.write(nb, tmp_path / "changed.ipynb")
    done = nbval(alone(tmp_path / "changed.ipynb", tmp_path / "colab"), installed, data_root)
    assert done.returncode != 0 and "1 failed" in done.stdout, done.stdout[-3000:]
