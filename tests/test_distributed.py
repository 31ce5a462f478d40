"""Training under torchrun: DistributedDataParallel with gloo, on the CPU, as CI can run it.

Each test starts the real launcher, ``torchrun --standalone``, on the smoke slice of the real
data (2,000 training and 1,000 test images), with one thread per process.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from cifar_course import distributed
from cifar_course.engine import RunConfig, fit, seed_everything, starting_point
from cifar_course.models import build_model
from cifar_course.recipes.lecture import Lecture, LectureHyper

TORCHRUN = Path(sys.executable).with_name("torchrun")
ENV = {"OMP_NUM_THREADS": "1", "CIFAR_COURSE_SMOKE": "1"}  # one thread per process, the slice


def torchrun(
    folder: Path, nproc: int, *args: str, restarts: int = 0, wait: bool = True
) -> subprocess.CompletedProcess | subprocess.Popen:
    """``torchrun --standalone --nproc-per-node N -m cifar_course train --device cpu ...``."""
    command = [
        str(TORCHRUN),
        "--standalone",
        f"--nproc-per-node={nproc}",
        f"--max-restarts={restarts}",
        "-m",
        "cifar_course",
        "train",
        "--device",
        "cpu",
        "--out",
        str(folder / "out"),
        "--logdir",
        str(folder / "runs"),
        *args,
    ]
    env = dict(os.environ, **ENV)
    if not wait:
        return subprocess.Popen(
            command,
            cwd=folder,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
    return subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True, timeout=600)


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


def largest_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return max((a[k] - b[k]).abs().max().item() for k in a)


@pytest.mark.distributed
@pytest.mark.slow
@pytest.mark.parametrize("fast", [False, True], ids=["lecture loop", "fast loop"])
def test_two_processes_end_where_one_process_ends(tmp_path, data_root, fast):
    """Same global batch (64) and seed: 2 processes x 32 images per step against 1 x 64.

    Every step both runs average the gradients of the same 64 images, so only floating-point
    rounding can differ: a mean of two 32-image means summed in another order than one 64-image
    mean. After the 32 steps of one epoch that stays near 1e-6 (the weights are of order 0.1;
    float32 carries 7 digits). The tolerance, 1e-5, is a hundred times below how far training
    moves the weights, which the test also checks, so a wrong split of the data cannot pass.
    """
    flags = ["--epochs", "1", "--batch-size", "64"] + (["--fast"] if fast else [])
    runs = {}
    for nproc in (1, 2):
        folder = tmp_path / f"n{nproc}"
        folder.mkdir()
        done = torchrun(folder, nproc, *flags)
        assert done.returncode == 0, done.stdout + done.stderr
        runs[nproc] = weights(folder / "out" / "lesson_net_epoch01.pt")
    seed_everything(0)
    start = build_model("lesson_net").state_dict()
    moved = largest_difference(runs[1], start)
    assert largest_difference(runs[1], runs[2]) < 1e-5
    assert moved > 100 * 1e-5, moved


@pytest.mark.distributed
@pytest.mark.slow
def test_end_to_end_two_processes_train_once_save_once_learn_and_resume(tmp_path, data_root):
    # Batch 8 (4 per process): the smoke slice's 2,000 images give the default batch of 64 only
    # 32 steps an epoch, too few to leave chance in two epochs; 250 steps are enough.
    done = torchrun(tmp_path, 2, "--epochs", "2", "--batch-size", "8")
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "2 processes (cpu, DDP)" in out and "batch 8 (4 per process)" in out
    for epoch in (1, 2):
        assert out.count(f"saved {tmp_path / 'out'}/lesson_net_epoch0{epoch}.pt") == 1, out
    assert out.count("final test accuracy") == 1
    accuracy = float(re.search(r"final test accuracy: ([\d.]+)%", out)[1])
    assert accuracy > 15.0, out  # chance is 10 %
    assert len(list((tmp_path / "runs").glob("events.out.tfevents.*"))) == 1  # rank 0 only
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "lesson_net_epoch01.pt",
        "lesson_net_epoch02.pt",
    ]
    state = weights(tmp_path / "out" / "lesson_net_epoch02.pt")
    assert not any(k.startswith("module.") for k in state)  # the plain model's state_dict
    evaluated = subprocess.run(
        [
            sys.executable,
            "-m",
            "cifar_course",
            "evaluate",
            "--checkpoint",
            "out/lesson_net_epoch02.pt",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=dict(os.environ, CIFAR_COURSE_SMOKE="1"),
    )
    assert evaluated.returncode == 0, evaluated.stderr
    assert f"{accuracy:.2f}% on 1,000 images" in evaluated.stdout

    # ... and a third epoch resumes from the second on every process (one launch less than a
    # test of its own)
    resumed = torchrun(
        tmp_path, 2, "--epochs", "3", "--batch-size", "8", "--resume", "out/lesson_net_epoch02.pt"
    )
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert resumed.stdout.count("resumed from out/lesson_net_epoch02.pt after epoch 2") == 1
    assert "epoch  3/3" in resumed.stdout
    assert "epoch  1/3" not in resumed.stdout and "epoch  2/3" not in resumed.stdout
    state = torch.load(tmp_path / "out" / "lesson_net_epoch03.pt", weights_only=True)
    assert [h["epoch"] for h in state["history"]] == [1, 2, 3]


@pytest.mark.distributed
@pytest.mark.slow
@pytest.mark.parametrize(
    ("recipe", "arch"), [("modern", "modern_net"), ("speedrun", "speed_net_small")]
)
def test_the_other_recipes_train_under_torchrun_too(tmp_path, data_root, recipe, arch):
    done = torchrun(tmp_path, 2, "--recipe", recipe, "--epochs", "1", "--batch-size", "128")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"training {arch}" in done.stdout and "on 2 processes (cpu, DDP)" in done.stdout
    assert done.stdout.count("final test accuracy") == 1
    state = weights(tmp_path / "out" / f"{arch}_epoch01.pt")
    assert not any(k.startswith("module.") for k in state)


@pytest.mark.distributed
@pytest.mark.slow
@pytest.mark.parametrize("mistake", [False, True], ids=["every process", "rank 0 only"])
def test_with_lookahead_every_process_keeps_the_same_weights(tmp_path, data_root, mistake):
    """DDP averages the gradients but never compares the weights: a lookahead that ran on one
    process only would let the processes drift apart unnoticed. Each process saves its own
    parameters (tests/torchrun_ranks.py); with the deliberate mistake they must differ."""
    script = Path(__file__).with_name("torchrun_ranks.py")
    command = [str(TORCHRUN), "--standalone", "--nproc-per-node=2", str(script), str(tmp_path)]
    if mistake:
        command.append("--lookahead-on-rank-0")
    env = dict(os.environ, **ENV)
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "on 2 processes (cpu, DDP)" in done.stdout and ", lookahead," in done.stdout
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    same = all(torch.equal(v, ranks[1][k]) for k, v in ranks[0].items())
    assert same is not mistake


def workers_of(launcher: int) -> dict[int, int]:
    """``{rank: pid}`` of the worker processes that torchrun ``launcher`` started."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            environ = (entry / "environ").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if parent == launcher:
            for item in environ:
                if item.startswith(b"RANK="):
                    found[int(item[5:])] = int(entry.name)
    return found


def kill_after_the_first_checkpoint(job: subprocess.Popen, tmp_path: Path, rank: int) -> Path:
    """Wait (up to 300 s) for ``job``'s first checkpoint in ``tmp_path/out``, then SIGKILL its
    worker of ``rank``; the checkpoint's path."""
    first = tmp_path / "out" / "lesson_net_epoch01.pt"
    deadline = time.monotonic() + 300
    while not first.exists() and job.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    workers = workers_of(job.pid)
    assert first.exists() and rank in workers, workers
    os.kill(workers[rank], signal.SIGKILL)
    return first


@pytest.mark.distributed
@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the workers through /proc")
def test_a_killed_worker_leaves_the_checkpoints_intact_and_the_restart_resumes(tmp_path, data_root):
    """SIGKILL rank 0, the process that saves, after its first checkpoint; torchrun restarts the
    job (``--max-restarts 1``), which resumes from the last checkpoint by itself."""
    job = torchrun(tmp_path, 2, "--epochs", "6", "--batch-size", "8", restarts=1, wait=False)
    first = kill_after_the_first_checkpoint(job, tmp_path, rank=0)
    out, _ = job.communicate(timeout=600)
    assert job.returncode == 0, out
    match = re.search(r"torchrun restart 1: resuming from (\S+lesson_net_epoch0(\d)\.pt)", out)
    assert match, out
    assert torch.load(first, weights_only=True)["epoch"] == 1  # intact
    final = torch.load(tmp_path / "out" / "lesson_net_epoch06.pt", weights_only=True)
    assert [h["epoch"] for h in final["history"]] == [1, 2, 3, 4, 5, 6]
    assert out.count("final test accuracy") == 1


@pytest.mark.distributed
@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the workers through /proc")
def test_when_a_worker_is_killed_the_survivor_says_so_in_one_line(tmp_path, data_root):
    """SIGKILL rank 1 without restarts: rank 0, which torchrun then stops (or whose collective
    fails first), prints the course's one line with the way on, and no traceback of its own;
    torchrun's own summary may follow."""
    job = torchrun(tmp_path, 2, "--epochs", "6", "--batch-size", "8", wait=False)
    first = kill_after_the_first_checkpoint(job, tmp_path, rank=1)
    out, _ = job.communicate(timeout=600)
    assert job.returncode != 0
    lines = [line for line in out.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, out
    assert lines[0].startswith("error: process 0 of 2 stopped, because another process") and (
        "run the same command with --resume" in lines[0] and "lesson_net_epoch0" in lines[0]
    ), lines
    assert out.count("Traceback (most recent call last)") <= 1  # torchrun's own, if any
    assert "ChildFailedError" in out or "Traceback" not in out
    assert torch.load(first, weights_only=True)["epoch"] == 1  # intact


@pytest.fixture
def one_process_group(tmp_path):
    dist.init_process_group(
        "gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1
    )
    yield distributed.Distributed(0, 0, 1, torch.device("cpu"), "this-run", restart=1)
    dist.destroy_process_group()


def test_a_restart_resumes_only_from_its_own_jobs_checkpoints(tmp_path, one_process_group):
    out = tmp_path / "out"
    out.mkdir()
    model = build_model("lesson_net")
    for epoch, run_id in ((5, "an-earlier-run"), (2, "this-run"), (1, "this-run")):
        torch.save(
            {"model": model.state_dict(), "epoch": epoch, "config": {"run_id": run_id}},
            out / f"lesson_net_epoch0{epoch}.pt",
        )
    (out / "lesson_net_epoch09.pt").write_bytes(b"half a file")  # a torn write is skipped
    found = distributed.checkpoint_to_restart_from(out, "lesson_net", one_process_group)
    assert found == out / "lesson_net_epoch02.pt"


def test_without_torchrun_no_process_group_is_started(tmp_path, data_root, monkeypatch):
    for name in distributed.TORCHRUN_VARIABLES:
        monkeypatch.delenv(name, raising=False)

    def refuse(*args, **kwargs):
        raise AssertionError("a plain run started a process group")

    monkeypatch.setattr(dist, "init_process_group", refuse)
    run = RunConfig(device="cpu", out=str(tmp_path / "out"), logdir=str(tmp_path / "runs"))
    history = fit(Lecture, run, LectureHyper(epochs=1), log=lambda message: None)
    assert len(history) == 1 and not dist.is_initialized()


@pytest.mark.distributed
@pytest.mark.slow
def test_a_global_batch_that_does_not_split_evenly_is_refused_in_one_line(tmp_path, data_root):
    done = torchrun(tmp_path, 2, "--epochs", "1", "--batch-size", "63")
    assert done.returncode != 0
    assert (
        "error: --batch-size 63 is the global batch, shared by 2 processes; choose a multiple "
        "of 2." in done.stderr
    )
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_a_restart_of_a_resumed_job_prefers_the_jobs_own_newer_checkpoint(
    tmp_path, one_process_group
):
    out = tmp_path / "out"
    out.mkdir()
    run = RunConfig(out=str(out), resume="earlier/lesson_net_epoch03.pt")
    notes: list[str] = []
    found = starting_point(run, "lesson_net", one_process_group, notes.append)
    assert found == ("earlier/lesson_net_epoch03.pt", None)  # nothing of this job yet
    assert notes == [
        "torchrun restart 1: no checkpoint of this job yet, starting again from "
        "earlier/lesson_net_epoch03.pt"
    ]
    torch.save(
        {"model": {}, "epoch": 4, "config": {"run_id": "this-run"}}, out / "lesson_net_epoch04.pt"
    )
    found = starting_point(run, "lesson_net", one_process_group, notes.append)
    assert found == (str(out / "lesson_net_epoch04.pt"), None)
    assert run.resume == "earlier/lesson_net_epoch03.pt"  # the settings themselves stay as given


@pytest.mark.distributed
@pytest.mark.slow
def test_an_earlier_runs_logs_stop_a_new_job_on_rank_0_and_torchrun_ends_the_others(
    tmp_path, data_root
):
    """Only rank 0 logs, so only rank 0 checks --logdir; when it refuses, the other process,
    already waiting for it in DDP's first broadcast, is stopped by torchrun rather than hanging."""
    (tmp_path / "runs").mkdir()
    earlier = tmp_path / "runs" / "events.out.tfevents.1.earlier"
    earlier.write_bytes(b"an earlier run's events")
    began = time.monotonic()
    done = torchrun(tmp_path, 2, "--epochs", "1", "--batch-size", "8")
    assert done.returncode != 0
    assert "error: --logdir" in done.stderr and "--overwrite" in done.stderr
    assert time.monotonic() - began < 120
    assert earlier.read_bytes() == b"an earlier run's events"
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())
