"""Test set-up: the real CIFAR-10 copy, in smoke mode (a small fixed slice of it)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "cifar10"
CACHES = shutil.ignore_patterns("__pycache__", "*.pyc")

NO_DATA = ""  # why no copy of CIFAR-10 could be found or downloaded, if none was


def _find_the_data() -> None:
    """Point ``CIFAR_COURSE_DATA`` at the real CIFAR-10: the variable as set, else the shared
    offline copy beside the checkout (CI), else the checkout's ``data/``, which ``make train``
    downloads, downloading it now if it is not there yet. Called when the first test starts,
    never at import or collection time: ``pytest --collect-only`` neither downloads nor writes."""
    global NO_DATA
    if os.environ.get("CIFAR_COURSE_DATA") or NO_DATA:
        return
    if (SHARED / "cifar-10-batches-py").is_dir():
        os.environ["CIFAR_COURSE_DATA"] = str(SHARED)
        return
    from filelock import FileLock  # torch's own dependency

    from cifar_course.data import find_data_root
    from cifar_course.errors import CourseError

    here = Path.cwd()
    os.chdir(ROOT)  # find_data_root looks in, and downloads into, ./data
    try:
        # make test's two workers start at once: one downloads, the other waits for it
        with FileLock(ROOT / ".data.lock"):
            os.environ["CIFAR_COURSE_DATA"] = str(ROOT / find_data_root())
    except CourseError as error:
        NO_DATA = str(error)
    finally:
        os.chdir(here)


os.environ["CIFAR_COURSE_SMOKE"] = "1"
os.environ.setdefault("MPLBACKEND", "Agg")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # pytest-xdist's workers (`make test` runs two, one per core): one thread each, for their
    # tests and for the processes those start (kernels, torchrun, the CLI)
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)


# A test that takes longer than this on the 2-core machine must be marked slow, so that
# `make check` (-m "not slow") stays within 2 minutes; the variable is for the guard's own test.
UNMARKED_LIMIT_S = float(os.environ.get("CIFAR_COURSE_UNMARKED_LIMIT_S", "15"))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """Fail a test that passed but took longer than ``UNMARKED_LIMIT_S`` without the ``slow``
    marker, naming the fix."""
    outcome = yield
    report = outcome.get_result()
    slow = item.get_closest_marker("slow") is not None
    if call.when == "call" and report.passed and not slow and call.duration > UNMARKED_LIMIT_S:
        report.outcome = "failed"
        report.longrepr = (
            f"{item.nodeid} took {call.duration:.1f} s but is not marked slow: add "
            f"@pytest.mark.slow, so that `make check` stays within 2 minutes "
            f"(unmarked tests may take {UNMARKED_LIMIT_S:g} s)"
        )


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Before the first test, and before nbval starts a notebook's kernel (which inherits the
    environment), find the data."""
    _find_the_data()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark what needs the built wheel as slow (building it takes 10-20 s), and what runs a
    notebook in a kernel (``run_alone``) as ``notebooks`` too; ``make check`` leaves them out."""
    for item in items:
        fixtures = getattr(item, "fixturenames", ())
        if "run_alone" in fixtures:
            item.add_marker(pytest.mark.notebooks)
        if "run_alone" in fixtures or "installed" in fixtures:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The folder holding cifar-10-batches-py; the tests need the real data, never fake data."""
    _find_the_data()
    env = os.environ.get("CIFAR_COURSE_DATA")
    if not env:
        pytest.fail(f"The tests need the real CIFAR-10: {NO_DATA}")
    return Path(env)


def pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", "--quiet", *args], check=True)


WHERE = "import cifar_course\nprint('cifar_course imported from', cifar_course.__file__)"


@pytest.fixture(scope="session")
def run_alone(installed, data_root):
    """Run a notebook as Colab would: alone in an empty folder, with only the installed wheel.

    A real kernel (nbclient) executes a copy of it in smoke mode; a cell appended for the test
    proves which copy of ``cifar_course`` the kernel imported. Returns the executed notebook,
    without that cell; a failing cell raises ``CellExecutionError``.
    """

    # imported here, not at the top: the GPU machine runs tests/test_fast.py and
    # tests/test_speedrun.py without Jupyter's packages (tools/gpu_session.sh)
    import nbformat
    from nbclient import NotebookClient

    def run(path: Path, folder: Path) -> nbformat.NotebookNode:
        folder.mkdir(parents=True, exist_ok=True)
        nb = nbformat.read(path, as_version=4)
        nb.cells.append(nbformat.v4.new_code_cell(WHERE))
        nbformat.write(nb, folder / path.name)  # the notebook alone, as Colab opens it
        env = dict(os.environ, PYTHONPATH=str(installed), CIFAR_COURSE_SMOKE="1")
        env["CIFAR_COURSE_DATA"] = str(data_root)
        # A print can reach the client as several stream messages (CI once saw the path arrive
        # apart from its first words); coalescing gives one output per stream, as Jupyter shows.
        client = NotebookClient(
            nb,
            timeout=900,
            kernel_name="python3",
            coalesce_streams=True,
            resources={"metadata": {"path": str(folder)}},
        )
        client.execute(env=env)
        where = nb.cells.pop().outputs[0].text
        assert where.startswith(f"cifar_course imported from {installed}"), where
        return nb

    return run


@pytest.fixture(scope="session")
def installed(tmp_path_factory, data_root) -> Path:
    """A folder holding cifar_course installed from a wheel of this checkout, and nothing else.

    Built once per ``pytest`` run: pytest-xdist's workers share the folder above their own
    temporary folders, and the first to get there builds it while the other waits (the recipe
    of pytest-xdist's documentation)."""
    from filelock import FileLock  # torch's own dependency

    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent
    base = shared / "installed"
    with FileLock(shared / "installed.lock"):
        if not (base / "site" / "cifar_course").is_dir():
            build_wheel(base)
    return base / "site"


def build_wheel(base: Path) -> None:
    """Build a wheel of this checkout and install it alone into ``base/site``."""
    if base.exists():
        shutil.rmtree(base)  # what a build stopped half-way left
    source = base / "source"  # a copy, so that no build/ of an earlier build can leak in
    shutil.copytree(ROOT / "cifar_course", source / "cifar_course", ignore=CACHES)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    pip(
        "wheel",
        "--no-deps",
        "--no-build-isolation",
        "--wheel-dir",
        str(base / "wheel"),
        str(source),
    )
    (wheel,) = (base / "wheel").glob("cifar_course-*.whl")
    pip("install", "--no-deps", "--target", str(base / "site"), str(wheel))
