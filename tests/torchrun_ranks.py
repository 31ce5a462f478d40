"""Run by ``tests/test_distributed.py`` under torchrun: train the speed-run recipe for 2 epochs on
the smoke slice and save this process's own parameters to ``OUT/rank<N>.pt``, so that the test
can compare what each process ends with (only rank 0 saves checkpoints).

    torchrun --standalone --nproc-per-node 2 tests/torchrun_ranks.py OUT [--lookahead-on-rank-0]

``--lookahead-on-rank-0`` makes every other process skip the lookahead's updates, a deliberate
mistake that the comparison must catch.
"""

import os
import sys
from pathlib import Path

import torch

from cifar_course.engine import RunConfig, fit
from cifar_course.models import SpeedNet, SpeedNetSmall
from cifar_course.recipes.speedrun import Lookahead, Speedrun, SpeedrunHyper

out = Path(sys.argv[1])
rank = int(os.environ["RANK"])
models = []


class Skipped(Lookahead):
    def update(self, model: torch.nn.Module, decay: float) -> None:
        pass


class Watched(Speedrun):
    """The recipe, with the small network on any device, kept here to be saved afterwards."""

    if "--lookahead-on-rank-0" in sys.argv and rank != 0:
        lookahead_type = Skipped

    def build_model(self) -> SpeedNet:
        models.append(SpeedNetSmall())
        return models[-1]


run = RunConfig(device="cpu", out=str(out / "checkpoints"), logdir=str(out / "runs"))
fit(Watched, run, SpeedrunHyper(epochs=2, batch_size=128, lr=0.05))
trained = {name: p.detach().clone() for name, p in models[0].named_parameters()}
torch.save(trained, out / f"rank{rank}.pt")
