"""The tools for machines without Jupyter: the notebook runner (tools/run_notebook_code.py) and the
GPU session script (tools/gpu_session.sh)."""

import json
import lzma
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RUNNER = ROOT / "tools" / "run_notebook_code.py"


def write_notebook(path: Path, cells: list[tuple[str, list[str]]]) -> Path:
    path.write_text(
        json.dumps(
            {
                "cells": [
                    {"cell_type": "code", "metadata": {"tags": tags}, "source": source}
                    for source, tags in cells
                ]
                + [{"cell_type": "markdown", "metadata": {}, "source": "print('not code')"}],
                "metadata": {},
                "nbformat": 4,
                "nbformat_minor": 5,
            }
        )
    )
    return path


def run(*paths: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(RUNNER), *map(str, paths)], capture_output=True, text=True
    )


def test_runs_cells_in_order_in_the_notebook_folder_and_shows_errors_meant_to_happen(tmp_path):
    notebook = write_notebook(
        tmp_path / "a.ipynb",
        [
            ("import os\nx = 2\nprint('cwd', os.getcwd())", []),
            ("raise ValueError('on purpose')", ["raises-exception"]),
            ("print('x is', x * 3)", []),
        ],
    )
    result = run(notebook)
    assert result.returncode == 0, result.stderr
    assert f"cwd {tmp_path}" in result.stdout
    assert "ValueError (shown on purpose): on purpose" in result.stdout
    assert "x is 6" in result.stdout
    assert "not code" not in result.stdout
    assert "a.ipynb" in result.stdout.splitlines()[-1]


def test_an_unexpected_error_fails_the_run_and_the_next_notebook_still_runs(tmp_path):
    bad = write_notebook(tmp_path / "bad.ipynb", [("1 / 0", [])])
    good = write_notebook(tmp_path / "good.ipynb", [("print('fine')", [])])
    result = run(bad, good)
    assert result.returncode == 1
    assert "ZeroDivisionError" in result.stderr
    assert "fine" in result.stdout


def test_ipython_magics_are_refused_with_the_line(tmp_path):
    notebook = write_notebook(tmp_path / "m.ipynb", [("%load_ext tensorboard", [])])
    result = run(notebook)
    assert result.returncode != 0
    assert "%load_ext tensorboard" in result.stderr


def test_a_writefile_cell_writes_its_file_as_the_notebook_would(tmp_path):
    notebook = write_notebook(
        tmp_path / "w.ipynb",
        [
            ("%%writefile script.py\nprint('from the script')\n", []),
            ("import runpy\nrunpy.run_path('script.py')", []),
        ],
    )
    result = run(notebook)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "script.py").read_text() == "print('from the script')\n"
    assert "from the script" in result.stdout


def test_clean_notebooks_keeps_a_progress_bars_last_state_and_writes_jupyterlabs_kernelspec(
    tmp_path,
):
    import nbformat

    old = {"display_name": "Python 3", "language": "python", "name": "python3"}
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": old, "widgets": {}})
    cell = nbformat.v4.new_code_cell("train()")
    stream = nbformat.v4.new_output
    cell.outputs = [
        stream("stream", name="stdout", text="\repoch 1:   0%|          | 0/782"),
        stream("stream", name="stdout", text="\repoch 1:  50%|#####     | 391/782"),
        stream("stream", name="stdout", text="\r                                  \r"),
        stream("stream", name="stdout", text="epoch  1: test accuracy 30.09%\n"),
        stream("stream", name="stderr", text="\r  \r"),
        stream("display_data", data={"application/vnd.jupyter.widget-view+json": {}}),
    ]
    cell.metadata["execution"] = {"iopub.status.busy": "2026-11-27T15:00:00"}
    nb.cells = [cell]
    path = tmp_path / "n.ipynb"
    nbformat.write(nb, path)
    subprocess.run(
        [sys.executable, str(ROOT / "tools" / "clean_notebooks.py"), str(path)], check=True
    )
    cleaned = nbformat.read(path, as_version=4)
    assert cleaned.metadata == {
        "kernelspec": {
            "display_name": "Python 3 (ipykernel)",
            "language": "python",
            "name": "python3",
        }
    }
    (only,) = cleaned.cells[0].outputs
    assert only.text == "epoch  1: test accuracy 30.09%\n"
    assert "execution" not in cleaned.cells[0].metadata


GPU_SESSION = ROOT / "tools" / "gpu_session.sh"


def test_the_gpu_session_gathers_xz_parts_byte_for_byte(tmp_path):
    """The data travels to the GPU machine in xz-compressed parts (delta filter), one call each;
    they must add up to the torchvision layout with the shared copy's MD5SUMS beside it."""
    parts = {"data_batch_1": b"\x00\x01" * 5000, "test_batch": bytes(range(256)) * 40}
    filters = [{"id": lzma.FILTER_DELTA, "dist": 1}, {"id": lzma.FILTER_LZMA2, "preset": 6}]
    for number, (name, data) in enumerate(parts.items(), 1):  # one folder per call
        (tmp_path / f".stage{number}").mkdir()
        packed = lzma.compress(data, format=lzma.FORMAT_XZ, filters=filters)
        (tmp_path / f".stage{number}" / f"{name}.xz").write_bytes(packed)
    (tmp_path / ".stage1" / "batches.meta").write_bytes(b"meta")
    (tmp_path / ".stage1" / "MD5SUMS").write_text("sums\n")
    env = {
        "PATH": "/usr/bin:/bin",
        "STAGE": str(tmp_path / "cifar10"),
        "OUT": str(tmp_path / "out"),
        "LOGS": str(tmp_path / "logs"),
    }
    done = subprocess.run(
        ["bash", str(GPU_SESSION), "stage"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    batches = tmp_path / "cifar10" / "cifar-10-batches-py"
    assert sorted(p.name for p in batches.iterdir()) == ["batches.meta", *sorted(parts)]
    for name, data in parts.items():
        assert (batches / name).read_bytes() == data
    assert (tmp_path / "cifar10" / "MD5SUMS").read_text() == "sums\n"


def gpu_machine(tmp_path: Path, python3: str | None = None) -> dict[str, str]:
    """A stand-in for the GPU machine as the run call finds it after the staging calls: a fake
    ``nvidia-smi`` and ``python3`` (the given script, else this interpreter) first on PATH, and
    every CIFAR-10 file staged (empty). Returns the environment for gpu_session.sh."""
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "nvidia-smi").write_text("#!/bin/sh\necho 'Fake GPU, 1 MiB'\n")
    (fake / "nvidia-smi").chmod(0o755)
    if python3 is None:
        (fake / "python3").symlink_to(sys.executable)
    else:
        (fake / "python3").write_text(python3)
        (fake / "python3").chmod(0o755)
    batches = tmp_path / "cifar10" / "cifar-10-batches-py"  # staged by the earlier calls
    batches.mkdir(parents=True)
    for name in ["batches.meta", "test_batch", *(f"data_batch_{i}" for i in range(1, 6))]:
        (batches / name).write_bytes(b"")
    (tmp_path / "cifar10" / "MD5SUMS").write_text("")
    return {
        "PATH": f"{fake}:/usr/bin:/bin",
        "STAGE": str(tmp_path / "cifar10"),
        "OUT": str(tmp_path / "out"),
        "LOGS": str(tmp_path / "logs"),
    }


def test_the_gpu_session_skips_what_its_deadline_leaves_no_time_for_and_packs_its_logs(tmp_path):
    """At most 8 files come back from the GPU machine: every log travels in one archive, written
    even when the deadline skips every step."""
    env = {**gpu_machine(tmp_path), "DEADLINE": "0"}
    done = subprocess.run(
        ["bash", str(GPU_SESSION), "speedrun"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert "=== sgd_cuda_graphs: skipped" in done.stdout
    assert "=== lever0_eager_as_before: skipped" in done.stdout
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["speedrun-logs.tar.gz"]
    with tarfile.open(tmp_path / "out" / "speedrun-logs.tar.gz") as archive:
        gpu = archive.extractfile("./gpu.txt")
        assert gpu is not None and b"Fake GPU" in gpu.read()


STEPS = {
    "smoke": ["smoke_tests"],
    "speedrun": ["data", "sgd_cuda_graphs", "muon_cuda_graphs", "lever0_eager_as_before"],
    "notebooks": ["notebooks"],
}


@pytest.mark.parametrize("mode", ["smoke", "speedrun", "notebooks"])
def test_the_gpu_session_runs_its_steps_in_order_and_packs_each_ones_log(tmp_path, mode):
    """With time for everything, each step runs once, in the order of need, in smoke mode only
    for the smoke call, and its log is in the archive: a stand-in python3 records each call."""
    env = gpu_machine(tmp_path, '#!/bin/sh\necho "ran: $* smoke=${CIFAR_COURSE_SMOKE:-}"\n')
    (tmp_path / "notebooks").mkdir()
    for number in range(1, 9):  # the lessons the notebooks call finds, and a stray file
        (tmp_path / "notebooks" / f"0{number}_lesson.ipynb").write_text("{}")
    (tmp_path / "notebooks" / "00_draft.ipynb").write_text("{}")
    done = subprocess.run(
        ["bash", str(GPU_SESSION), mode], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
    ran = [line.split()[1].rstrip(":") for line in done.stdout.splitlines() if "exit 0" in line]
    assert ran == STEPS[mode]
    with tarfile.open(tmp_path / "out" / f"{mode}-logs.tar.gz") as archive:
        logs = {
            name: archive.extractfile(f"./{name}.log").read().decode()  # type: ignore[union-attr]
            for name in STEPS[mode]
        }
    smoke = "smoke=1" if mode == "smoke" else "smoke="
    assert all(log.startswith("ran: ") and log.strip().endswith(smoke) for log in logs.values())
    if mode == "speedrun":  # the target's 10 seeds, warm, with CUDA graphs
        assert "--set cudnn_benchmark=True --seeds 0 1 2 3 4 5 6 7 8 9" in logs["sgd_cuda_graphs"]
    if mode == "notebooks":  # every lesson once, 08 first, 05 after the 03 whose file it reads
        names = [w.split("/")[-1][:2] for w in logs["notebooks"].split() if w.endswith(".ipynb")]
        assert sorted(names) == ["01", "02", "03", "04", "05", "06", "07", "08"]
        assert names[0] == "08" and names.index("03") < names.index("05")


def test_the_gpu_session_stops_at_once_when_parts_staged_by_earlier_calls_are_gone(tmp_path):
    """A fresh machine between calls loses what earlier calls staged: one line says so, before
    any step spends the session's device time."""
    env = {
        "PATH": "/usr/bin:/bin",
        "STAGE": str(tmp_path / "cifar10"),
        "OUT": str(tmp_path),
        "LOGS": str(tmp_path / "logs"),
    }
    done = subprocess.run(
        ["bash", str(GPU_SESSION), "speedrun"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 3
    assert "MD5SUMS is missing: this call's part was not carried, or the machine" in done.stdout
    assert "===" not in done.stdout


@pytest.mark.slow
def test_the_gpu_machines_tests_need_no_jupyter_packages():
    """The GPU machine has pytest but neither nbformat nor nbclient: the tests its smoke step runs
    must be collected without them (conftest imports them only where a notebook runs)."""
    blocked = "import sys; sys.modules.update(nbformat=None, nbclient=None, nbval=None)"
    collect = "import pytest; sys.exit(pytest.main(['-q', '--collect-only', *sys.argv[1:]]))"
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            f"{blocked}; {collect}",
            "tests/test_fast.py",
            "tests/test_speedrun.py",
        ],
        cwd=ROOT,
        env={**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"},
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]


def test_the_gpu_session_refuses_a_mode_it_does_not_know(tmp_path):
    """A mistyped mode must not fall through to the full measurements."""
    env = {"PATH": "/usr/bin:/bin", "STAGE": str(tmp_path), "OUT": str(tmp_path)}
    done = subprocess.run(
        ["bash", str(GPU_SESSION), "Run"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert done.returncode == 2 and "usage:" in done.stdout
    assert "===" not in done.stdout


KERNEL_RUNNER = ROOT / "tools" / "run_notebooks_kernel.py"


@pytest.mark.notebooks
@pytest.mark.slow
def test_the_kernel_runner_runs_magics_and_errors_meant_to_happen_and_reports_the_rest(tmp_path):
    """tools/run_notebooks_kernel.py executes in a real Jupyter kernel (nbclient), so IPython
    magics run and a cell tagged ``raises-exception`` may fail; any other error is reported, and
    the next notebook still runs. All run in one working folder, in order."""
    pytest.importorskip("nbclient")
    good = write_notebook(
        tmp_path / "a.ipynb",
        [
            ("%%writefile made.txt\nfrom a", []),
            ("raise ValueError('on purpose')", ["raises-exception"]),
        ],
    )
    bad = write_notebook(
        tmp_path / "b.ipynb", [("print(open('made.txt').read())", []), ("1 / 0", [])]
    )
    for path in (good, bad):  # nbformat 4.5 wants cell ids and outputs
        notebook = json.loads(path.read_text())
        for number, cell in enumerate(notebook["cells"]):
            cell.update(id=f"c{number}")
            if cell["cell_type"] == "code":
                cell.update(outputs=[], execution_count=None)
        path.write_text(json.dumps(notebook))
    out = tmp_path / "out"
    done = subprocess.run(
        [
            sys.executable,
            str(KERNEL_RUNNER),
            str(good),
            str(bad),
            "--workdir",
            str(tmp_path / "work"),
            "--out",
            str(out),
            "--timeout",
            "60",
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    rows = (out / "times.md").read_text().splitlines()[2:]
    assert rows[0].startswith("| a.ipynb |") and rows[0].endswith("| ran through |")
    assert rows[1].startswith("| b.ipynb |") and "ZeroDivisionError" in rows[1]
    executed = json.loads((out / "b.ipynb").read_text())
    assert "".join(executed["cells"][0]["outputs"][0]["text"]) == "from a\n\n"  # same folder
    assert "\x1b[" not in rows[1]  # the error's colour codes are not in the table


BENCH = ROOT / "tools" / "speedrun_bench.py"


@pytest.mark.slow
def test_the_speedrun_bench_times_a_cold_run_then_warm_ones_and_chooses_epochs(data_root, tmp_path):
    """tools/speedrun_bench.py: one cold run, a probe at the default epochs, then the seeds at the
    most epochs predicted to fit; a switch it does not know is refused in one line."""
    command = [sys.executable, str(BENCH), "--out", str(tmp_path), "--device", "cpu"]
    done = subprocess.run(
        [
            *command,
            "--label",
            "t",
            "--seeds",
            "0",
            "1",
            "--epochs",
            "1",
            "--batch-size",
            "500",
            "--set",
            "device_data_path=False",
            "--choose-epochs",
            "1",
            "2",
            "--within",
            "1000",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "CIFAR_COURSE_SMOKE": "1"},
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    summary = (tmp_path / "t.md").read_text()
    assert "device_data_path=False" in summary
    kinds = [line.split("|")[1].strip() for line in summary.splitlines() if line.startswith("| ")]
    assert kinds[1:] == ["cold", "probe", "warm", "warm", "**mean of 2 warm runs**"]
    assert "chosen: 2 epochs" in summary  # the probe ran at 1, so both warm runs are new
    refused = subprocess.run(
        [*command, "--label", "u", "--set", "EPOCHS=3"], capture_output=True, text=True
    )
    assert refused.returncode == 2 and "the switches are optimizer, compile" in refused.stderr
    misspelt = subprocess.run(
        [*command, "--label", "u", "--set", "compile=reduce_overhead"],
        capture_output=True,
        text=True,
    )
    assert misspelt.returncode == 2 and "Traceback" not in misspelt.stderr
    assert "speedrun compile = 'reduce_overhead': it must be one of 'off'" in misspelt.stderr
