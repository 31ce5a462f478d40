"""Run ``cifar-course train --recipe speedrun`` for several seeds and summarise them.

    python tools/speedrun_seeds.py --seeds 0 1 2 --out benchmarks/<date>-<machine>-speedrun

Each seed's full log goes to ``OUT/seed<N>.log``; ``OUT/summary.md`` gets the machine, one row per
seed (with ``--budget``, the run it chose; accuracy without TTA, with flip TTA, with
flip-and-shift TTA; training seconds, and the whole command's), the mean and the spread (sample
standard deviation), rewritten after each seed. Extra arguments after ``--`` go to ``train``.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cifar_course.device import describe_machine, pick_device

FINAL = re.compile(
    r"final test accuracy: ([\d.]+)% \(with flip-and-shift TTA; ([\d.]+)% with flip TTA, "
    r"([\d.]+)% without\)"
)
TIME = re.compile(r"training time ([\d.]+) s")
PLAN = re.compile(r"^budget [\d.]+ min: (\w+) \(.*?\), batch (\d+), (\d+) epochs?", re.M)


def run_seed(seed: int, out: Path, extra: list[str]) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as work:
        command = [
            sys.executable,
            "-m",
            "cifar_course",
            "train",
            "--recipe",
            "speedrun",
            "--seed",
            str(seed),
            "--out",
            str(Path(work) / "checkpoints"),
            "--logdir",
            str(Path(work) / "runs"),
            *extra,
        ]
        began = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True)
        wall = time.perf_counter() - began
    log = out / f"seed{seed}.log"
    log.write_text("$ cifar-course " + " ".join(command[3:]) + "\n" + done.stdout + done.stderr)
    final, seconds = FINAL.search(done.stdout), TIME.search(done.stdout)
    if done.returncode or final is None or seconds is None:
        raise SystemExit(f"seed {seed} failed (exit {done.returncode}); see {log}")
    tta, flip, plain = (float(x) for x in final.groups())
    row = {"seed": seed, "plain": plain, "flip": flip, "tta": tta, "seconds": float(seconds[1])}
    plan = PLAN.search(done.stdout)
    chose = f"{plan[1]}, batch {plan[2]}, {plan[3]} epochs" if plan else ""
    return row | {"wall": wall, "chose": chose}  # type: ignore[dict-item]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--device", default="auto")
    args, extra = parser.parse_known_args()
    extra = [a for a in extra if a != "--"] + ["--device", args.device]
    args.out.mkdir(parents=True, exist_ok=True)
    machine = describe_machine(pick_device(args.device))
    rows: list[dict] = []
    for seed in args.seeds:
        rows.append(run_seed(seed, args.out, extra))
        r = rows[-1]
        print(
            f"seed {seed}: {r['tta']:.2f}% with flip-and-shift TTA ({r['plain']:.2f}% without), "
            f"{r['seconds']:.1f} s of training",
            flush=True,
        )
        write_summary(args.out, rows, extra, machine)  # after each seed: a stopped series keeps it
    print((args.out / "summary.md").read_text())


def write_summary(out: Path, rows: list[dict], extra: list[str], machine: str) -> None:
    """``out/summary.md``: one row per seed, the mean and the spread."""
    chose = any(r["chose"] for r in rows)
    lines = [
        f"# `cifar-course train --recipe speedrun {' '.join(extra)}`, {len(rows)} seeds",
        "",
        f"Machine: {machine}",
        "",
        "| seed |"
        + (" chosen run |" if chose else "")
        + " without TTA | flip TTA | flip-and-shift TTA | training | whole command |",
        "|---|" + ("---|" if chose else "") + "---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['seed']} |"
            + (f" {r['chose']} |" if chose else "")
            + f" {r['plain']:.2f} % | {r['flip']:.2f} % | {r['tta']:.2f} % | "
            f"{r['seconds']:.1f} s | {r['wall']:.1f} s |"
        )
    keys = ("plain", "flip", "tta", "seconds", "wall")
    mean = {k: statistics.mean(r[k] for r in rows) for k in keys}
    lines.append(
        "| mean |"
        + (" |" if chose else "")
        + f" {mean['plain']:.2f} % | {mean['flip']:.2f} % | **{mean['tta']:.2f} %** | "
        f"{mean['seconds']:.1f} s | {mean['wall']:.1f} s |"
    )
    if len(rows) > 1:
        spread = {k: statistics.stdev(r[k] for r in rows) for k in ("plain", "tta", "seconds")}
        lines.append(
            f"\nSpread (sample standard deviation over the seeds): {spread['tta']:.2f} points with "
            f"flip-and-shift TTA, {spread['plain']:.2f} without; {spread['seconds']:.1f} s of "
            f"training. Lowest and highest with TTA: {min(r['tta'] for r in rows):.2f} % and "
            f"{max(r['tta'] for r in rows):.2f} %. Longest training: "
            f"{max(r['seconds'] for r in rows):.1f} s; longest command: "
            f"{max(r['wall'] for r in rows):.1f} s."
        )
    (out / "summary.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
