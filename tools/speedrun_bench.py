"""Time the speed-run recipe as airbench times it: in one process, after a warm-up run.

    python tools/speedrun_bench.py --seeds 0 1 2 3 4 5 6 7 8 9 --out DIR --label NAME \\
        [--set compile=off ...] [--epochs 10] [--batch-size 1024] [--lr 1.5] [--no-lookahead]
        [--choose-epochs 10 11 12 --within 2.4]

One process trains ``--warmup-seed`` first (the *cold* run: it pays for compilation, cuDNN's
kernel timing and every other first use), then each seed (the *warm* runs). Each run is
``cifar-course train --recipe speedrun`` in-process (``engine.fit(Speedrun, ...)``), whose training
time is airbench's: the whitening computation, the choice of precision and each epoch's loop,
each timed with the device synchronized. Left out, as airbench leaves them out: building the
model and the optimizer, the test after each epoch (and here the checkpoint it saves), the final
test-time augmentation.

``--set NAME=VALUE`` sets one of the recipe's settings that have no flag of ``cifar-course
train`` (``SpeedrunHyper``'s ``compile``, ``cudnn_benchmark``, ``device_data_path``,
``channels_last``, ``optimizer``), so that each lever can be measured alone; the recipe refuses a
value it does not know. With ``optimizer=muon``, ``SpeedrunHyper.MUON`` gives the epochs, batch
and lr not given (Muon's lr is not scaled with the batch: its steps are orthogonalized).

``--choose-epochs`` first times one more warm run, the *probe*, of the first seed at the epochs
given (or the defaults), then trains every seed at the most epochs among the choices whose
predicted training time (the probe's first epoch, whitening included, plus its mean later epoch
for each further one) stays within ``--within`` seconds, or at the fewest if none does. Where
that is the probe's own count, the probe is the first seed's warm run.

``DIR/NAME.md`` gets the machine, the switches, one row per run and the mean and spread of the
warm runs; the output lines are printed as they come.
"""

from __future__ import annotations

import argparse
import ast
import statistics
import sys
import tempfile
import time
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import torch

from cifar_course import recipes
from cifar_course.data import TensorData
from cifar_course.device import describe_machine, pick_device
from cifar_course.engine import RunConfig, fit
from cifar_course.errors import CourseError
from cifar_course.recipes.speedrun import Speedrun, SpeedrunHyper

# the recipe's settings without a flag of cifar-course train: the levers this tool sets
SWITCHES = tuple(f.name for f in fields(SpeedrunHyper) if not f.metadata.get("help"))
_loaded: dict[tuple[bool, str], TensorData] = {}


def cached_data(train: bool, device: torch.device) -> TensorData:
    """``TensorData``, read from disk once per process: the runs only read it. (Not training
    time either way; it saves a second of each run's wall time.)"""
    key = (train, str(device))
    if key not in _loaded:
        _loaded[key] = TensorData(train, device)
    return _loaded[key]


def train_once(seed: int, hyper: SpeedrunHyper, device: str) -> dict[str, Any]:
    """One in-process run; its accuracies, airbench's training time and each epoch's time."""
    with tempfile.TemporaryDirectory() as work:
        run = RunConfig(out=f"{work}/checkpoints", logdir=f"{work}/runs", seed=seed, device=device)
        began = time.perf_counter()
        history = fit(Speedrun, run, hyper, log=lambda line: print("    " + line, flush=True))
        wall = time.perf_counter() - began
    last = history[-1]
    return {
        "seed": seed,
        "epochs": hyper.epochs,
        "plain": 100 * last["test_accuracy"],
        "flip": 100 * last["test_accuracy_flip"],
        "tta": 100 * last["test_accuracy_tta"],
        "seconds": sum(h["seconds"] for h in history),
        "epoch_seconds": [h["seconds"] for h in history],
        "wall": wall,
    }


def row(kind: str, r: dict[str, Any]) -> str:
    """One run as a row of the summary's table."""
    return (
        f"| {kind} | {r['seed']} | {r['epochs']} | {r['plain']:.2f} % | {r['flip']:.2f} % | "
        f"{r['tta']:.2f} % | {r['seconds']:.3f} s | {r['wall']:.1f} s |"
    )


def predict(r: dict[str, Any], epochs: int) -> float:
    """Training time at ``epochs`` from a run's epoch times: its first epoch (whitening
    included), then the mean of its later epochs for each further epoch."""
    first, later = r["epoch_seconds"][0], r["epoch_seconds"][1:] or r["epoch_seconds"]
    return first + (epochs - 1) * statistics.mean(later)


def main() -> None:
    """Set the switches, train the cold run and the warm ones, write the summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--warmup-seed", type=int, default=1000)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--label", required=True)
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--set", action="append", default=[], metavar="NAME=VALUE", help=", ".join(SWITCHES)
    )
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--lr", type=float)
    parser.add_argument("--no-lookahead", dest="lookahead", action="store_false")
    parser.add_argument("--choose-epochs", type=int, nargs="+")
    parser.add_argument("--within", type=float, default=2.4)
    args = parser.parse_args()
    switches: dict[str, Any] = {}
    for item in args.set:
        name, _, value = item.partition("=")
        if name not in SWITCHES:
            parser.error(f"--set {item}: the switches are {', '.join(SWITCHES)}")
        try:
            switches[name] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            switches[name] = value  # a bare word: a string
    device = pick_device(args.device)
    hyper = SpeedrunHyper(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        lookahead=args.lookahead,
        **switches,
    ).resolved(device.type)
    try:  # a value the recipe does not know: one line, before any run
        hyper.validate()
    except CourseError as error:
        parser.error(str(error))
    recipes.speedrun.TensorData = cached_data  # type: ignore[attr-defined]
    epochs, batch_size, lr = hyper.epochs, hyper.batch_size, hyper.lr
    switches_text = ", ".join(f"{name}={getattr(hyper, name)!r}" for name in SWITCHES)
    head = [
        f"# speed-run timing: {args.label}",
        "",
        f"Machine: {describe_machine(device)}",
        f"Command: python {' '.join(sys.argv)}",
        f"Switches: {switches_text}; epochs {epochs}, batch {batch_size}, lr {lr:g}, "
        f"{'lookahead' if args.lookahead else 'no lookahead'}",
        "",
    ]
    print("\n".join(head), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    summary = args.out / f"{args.label}.md"
    notes: list[str] = []  # paragraphs after the table
    lines = [
        *head,
        "| run | seed | epochs | without TTA | flip TTA | flip-and-shift TTA | training | wall |",
        "|---|---|---|---|---|---|---|---|",
    ]

    def record(kind: str, r: dict[str, Any]) -> None:
        lines.append(row(kind, r))
        print(lines[-1], "epochs:", " ".join(f"{s:.3f}" for s in r["epoch_seconds"]), flush=True)
        summary.write_text("\n".join(lines) + "\n")

    cold = train_once(args.warmup_seed, hyper, args.device)
    record("cold", cold)
    if device.type == "cuda" and hyper.compile != "off":
        try:  # torch's own account of the compilation, by phase
            print(torch._dynamo.utils.compile_times(repr="str"), flush=True)
        except Exception as error:  # a private helper: it may change between releases
            print(f"(no compile times: {error})")
    warm: list[dict[str, Any]] = []
    if args.choose_epochs:
        probe = train_once(args.seeds[0], hyper, args.device)
        record("probe", probe)
        fits = [e for e in args.choose_epochs if predict(probe, e) <= args.within]
        chosen = max(fits) if fits else min(args.choose_epochs)
        notes.append(
            "Predicted from the probe: "
            + ", ".join(f"{e} epochs {predict(probe, e):.2f} s" for e in args.choose_epochs)
            + f"; chosen: {chosen} epochs (the most within {args.within} s"
            + ("" if fits else "; none fits, so the fewest")
            + ")."
        )
        print(notes[-1], flush=True)
        if chosen == epochs:
            warm.append(probe)
        epochs = chosen
        hyper = replace(hyper, epochs=chosen)
    for seed in args.seeds[len(warm) :]:
        warm.append(train_once(seed, hyper, args.device))
        record("warm", warm[-1])
    mean = {k: statistics.mean(r[k] for r in warm) for k in ("plain", "flip", "tta", "seconds")}
    lines.append(
        f"| **mean of {len(warm)} warm runs** | | {epochs} | {mean['plain']:.2f} % | "
        f"{mean['flip']:.2f} % | **{mean['tta']:.2f} %** | **{mean['seconds']:.3f} s** | |"
    )
    if len(warm) > 1:
        sd = {k: statistics.stdev(r[k] for r in warm) for k in ("tta", "seconds")}
        notes.append(
            f"Spread over the warm runs (sample standard deviation): {sd['tta']:.3f} points "
            f"with flip-and-shift TTA (standard error of the mean "
            f"{sd['tta'] / len(warm) ** 0.5:.3f}), {sd['seconds']:.3f} s of training; lowest and "
            f"highest with TTA {min(r['tta'] for r in warm):.2f} % and "
            f"{max(r['tta'] for r in warm):.2f} %, slowest run "
            f"{max(r['seconds'] for r in warm):.3f} s. Cold run: {cold['seconds']:.3f} s "
            f"of training, {cold['seconds'] - mean['seconds']:.3f} s more than the warm mean "
            f"(one-time costs: compilation, cuDNN's kernel timing, first use of each kernel)."
        )
    lines += [""] + [f"{note}\n" for note in notes]
    summary.write_text("\n".join(lines))
    print("\n".join(lines[len(head) :]), flush=True)


if __name__ == "__main__":
    main()
