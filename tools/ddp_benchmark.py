"""One epoch of a recipe three ways, in one run, as images/s, to see what DDP costs and gives:

1. one process, as a plain ``cifar-course train`` (on a CPU: with all the cores' threads);
2. one process under torchrun: DistributedDataParallel with one replica, its own overhead;
3. N processes under torchrun (on a CPU: one thread each, N = the cores; on GPUs: one per GPU),
   skipped where N would be 1.

    python tools/ddp_benchmark.py --out benchmarks/DATE-cpu-ddp                  # lecture, CPU
    python tools/ddp_benchmark.py --device cuda --recipe modern --out $OUT/ddp   # a GPU machine

It writes each run's full output and a summary (``summary.txt``) to ``--out``. Needs CIFAR-10
(``CIFAR_COURSE_DATA``) and runs the full data set unless ``CIFAR_COURSE_SMOKE=1``. The modern
recipe runs the same eager loop with and without DDP, so on a GPU it isolates DDP's overhead;
the lecture recipe's ``--fast`` loop would not (CUDA graphs and the bf16 probe are off under DDP).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from cifar_course.device import describe_machine


def run(name: str, command: list[str], threads: int | None, out: Path) -> float:
    """Run ``command`` (with ``threads`` threads per process); return the epoch's seconds."""
    env = dict(os.environ)
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    with tempfile.TemporaryDirectory() as work:
        flags = ["--epochs", "1", "--out", f"{work}/ck", "--logdir", f"{work}/runs"]
        done = subprocess.run(command + flags, env=env, capture_output=True, text=True)
    log = done.stdout + done.stderr
    (out / f"{name}.log").write_text(f"{' '.join(command)}  (threads: {threads})\n{log}")
    if done.returncode != 0:
        sys.exit(f"{name} failed; see {out / (name + '.log')}")
    return float(re.search(r"epoch  1/1 .*\(([\d.]+) s\)", log)[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/ddp"))
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--recipe", choices=["lecture", "modern"], default="lecture")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    cpu = args.device == "cpu"
    many = (os.cpu_count() or 1) if cpu else torch.cuda.device_count()
    threads = many if cpu else None
    recipe = ["--device", args.device, "--recipe", args.recipe]
    plain = [sys.executable, "-m", "cifar_course", "train", *recipe]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    module = ["-m", "cifar_course", "train", *recipe]
    runs = [
        (
            f"1 process x {threads} threads (plain)" if cpu else "1 process (plain)",
            "plain",
            plain,
            threads,
        ),
        ("1 process (torchrun, DDP)", "ddp1", [*torchrun, "--nproc-per-node=1", *module], threads),
    ]
    if many > 1:
        label = f"{many} processes x 1 thread" if cpu else f"{many} processes, one per GPU"
        runs.append(
            (
                f"{label} (torchrun, DDP)",
                f"ddp{many}",
                [*torchrun, f"--nproc-per-node={many}", *module],
                1 if cpu else None,
            )
        )
    images = 2000 if os.environ.get("CIFAR_COURSE_SMOKE") == "1" else 50_000
    batch = 64 if args.recipe == "lecture" else 512
    lines = [
        describe_machine(args.device),
        f"{args.recipe} recipe, batch {batch} (global), one epoch of {images:,} images",
        "",
    ]
    baseline = None
    for label, name, command, per_process in runs:
        seconds = run(name, command, per_process, args.out)
        rate = images / seconds
        baseline = baseline or rate
        lines.append(f"{label:<42} {seconds:7.1f} s  {rate:9,.0f} img/s  {rate / baseline:5.2f}x")
        print(lines[-1], flush=True)
    (args.out / "summary.txt").write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out / 'summary.txt'}")


if __name__ == "__main__":
    main()
