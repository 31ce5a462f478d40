"""Does lookahead move the whitening bias after it is frozen? A short speed-run on the CPU, eager,
on the tests' slice (CIFAR_COURSE_SMOKE=1): 4 epochs at batch 250, with and without lookahead;
compares the bias saved after epoch 3 with that after epoch 4 (frozen from epoch 4 on).

    CIFAR_COURSE_SMOKE=1 python benchmarks/2026-12-04-h200-second/lookahead_moves_frozen_bias.py
"""

import tempfile
from pathlib import Path

import torch

from cifar_course import speedrun

for lookahead in (True, False):
    out = Path(tempfile.mkdtemp())
    config = speedrun.TrainConfig(
        epochs=4,
        batch_size=250,
        lr=0.05,
        device="cpu",
        out=str(out / "o"),
        logdir=str(out / "l"),
        lookahead=lookahead,
    )
    speedrun.fit_speedrun(config, log=lambda line: None)
    files = [next((out / "o").glob(f"*epoch0{e}.pt")) for e in (3, 4)]
    saved = [torch.load(f, weights_only=True) for f in files]
    before, after = (s["model"]["whiten.bias"] for s in saved)
    print(
        f"lookahead {lookahead}: bias after epoch 4 equal to that after epoch 3: "
        f"{torch.equal(before, after)} (largest change {(after - before).abs().max():.3g})"
    )
