"""``--budget``: the best speed-run that fits a number of minutes on this machine.

Processors differ too much for one recipe to fit them all: one training step of ``SpeedNet`` at
batch 512 in bf16 took 0.45 s on one 2-core Intel Xeon with AMX and 1.2 s on another, and an
AMD EPYC without native bf16 took 3.2 s (``benchmarks/README.md``). So a short probe times this
machine: the precision probe of ``cifar_course.precision``, then a few training steps of each
candidate network at each candidate batch size and one test batch of each network (``measure``).
From those timings alone, ``choose`` picks the run; it is deterministic, and the tests give it
stand-in timings.

The rule (``choose``): of the networks, widest first, take the first that fits at least
``MIN_EPOCHS`` epochs in the budget, with the batch size that fits it the most epochs (the
smaller batch on a tie: more steps per epoch), and as many epochs as fit, up to ``MAX_EPOCHS``.
If no network fits ``MIN_EPOCHS``, the one that fits the most epochs. The budget counts the whole
run: the probe already spent, every epoch's training and test, and the flip-and-shift test of
the last epoch; ``MARGIN`` of it is kept back for what the probe does not time (loading the
data, the whitening filters, checkpoints, the step's augmentation and lookahead).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .device import keep_freed_memory, synchronize
from .errors import CourseError
from .models import build_model

NETWORKS = ("speed_net", "speed_net_medium", "speed_net_small")  # widest first
BATCHES = (512, 1024)  # the CPU recipe's batch and airbench94's
# A network that cannot train this many epochs gives way to a narrower one that can. A rule of
# thumb, not a measurement: airbench94 needs its 10 epochs for 94 % on this network, and a short
# run of a wide network loses more to the unfinished schedule than a narrow one loses to width.
MIN_EPOCHS = 8
MAX_EPOCHS = 40  # four times airbench94's 10; this recipe has not been measured beyond
MIN_BUDGET = 0.5  # minutes: below this, not even the probe fits, so none is run
MARGIN = 0.08  # the share of the budget kept back for what the probe does not time
TRAIN_IMAGES, TEST_IMAGES = 50_000, 10_000
TEST_BATCH = 1000  # evaluate_tta's
TTA_PASSES = 6  # the last epoch's flip-and-shift test: 6 passes over the test set, 1 otherwise
PROBE_STEPS = 2  # timed steps of each candidate, after one warm-up step


@dataclass(frozen=True)
class Timing:
    """What the probe measured for one candidate: seconds per training step of ``network`` at
    ``batch_size``, and seconds to test ``TEST_BATCH`` images once."""

    network: str
    batch_size: int
    step_seconds: float
    test_seconds: float

    def epoch_seconds(self) -> tuple[float, float]:
        """(training, testing) seconds of one epoch."""
        steps = math.ceil(TRAIN_IMAGES / self.batch_size)
        return steps * self.step_seconds, math.ceil(TEST_IMAGES / TEST_BATCH) * self.test_seconds

    def run_seconds(self, epochs: int, spent: float) -> tuple[float, float]:
        """(training, whole run) seconds of ``epochs`` epochs, after ``spent`` seconds of probe.
        The last epoch's test is the flip-and-shift one."""
        train, test = self.epoch_seconds()
        return epochs * train, spent + epochs * (train + test) + (TTA_PASSES - 1) * test

    def epochs_within(self, budget_seconds: float, spent: float) -> int:
        """The most epochs, up to ``MAX_EPOCHS``, whose run fits ``budget_seconds`` less the
        margin; 0 if not even one does."""
        usable = budget_seconds * (1 - MARGIN)
        train, test = self.epoch_seconds()
        fits = (usable - spent - (TTA_PASSES - 1) * test) // (train + test)
        return int(min(MAX_EPOCHS, max(0, fits)))

    def smallest_budget(self, spent: float) -> float:
        """The smallest budget, in seconds, that fits one epoch."""
        return self.run_seconds(1, spent)[1] / (1 - MARGIN)


@dataclass(frozen=True)
class Choice:
    """The run ``choose`` picked, and the epochs each network would have fitted."""

    timing: Timing
    epochs: int
    train_seconds: float
    total_seconds: float
    probe_seconds: float
    alternatives: dict[str, int]  # each network's most epochs, at its best batch size


def minutes(seconds: float) -> str:
    """``seconds`` as minutes with one decimal, rounded up: "1.3"."""
    return f"{math.ceil(seconds / 6) / 10:g}"


def choose(budget_minutes: float, timings: Sequence[Timing], spent: float) -> Choice:
    """The run that fits ``budget_minutes`` (see the module's docstring), from the probe's
    ``timings`` and the ``spent`` seconds it took. Refuses, in one line that names the smallest
    budget that fits, a budget too small for one epoch of any candidate."""
    if not timings:
        raise ValueError("choose needs at least one timing")
    budget = budget_minutes * 60
    best: dict[str, tuple[int, Timing]] = {}
    for timing in sorted(timings, key=lambda t: (NETWORKS.index(t.network), t.batch_size)):
        epochs = timing.epochs_within(budget, spent)
        if timing.network not in best or epochs > best[timing.network][0]:
            best[timing.network] = (epochs, timing)
    alternatives = {network: epochs for network, (epochs, _) in best.items()}
    wide_enough = [n for n in best if best[n][0] >= MIN_EPOCHS]
    network = wide_enough[0] if wide_enough else max(best, key=lambda n: best[n][0])
    epochs, timing = best[network]
    if epochs == 0:
        smallest = min(t.smallest_budget(spent) for t in timings)
        raise CourseError(
            f"--budget {budget_minutes:g}: one epoch of the fastest network takes longer here, "
            f"the {spent:.0f} s probe included; give --budget {minutes(smallest)} or more."
        )
    train, total = timing.run_seconds(epochs, spent)
    return Choice(timing, epochs, train, total, spent, alternatives)


def _fastest(
    block: Callable[[], object], device: torch.device, clock: Callable[[], float]
) -> float:
    """The fastest of ``PROBE_STEPS`` timed calls of ``block``, after one warm-up call."""
    times = []
    for i in range(1 + PROBE_STEPS):
        synchronize(device)
        began = clock()
        block()
        synchronize(device)
        if i > 0:
            times.append(clock() - began)
    return min(times)


def measure(
    device: torch.device,
    bf16: bool,
    make_optimizer: Callable[[nn.Module, int], torch.optim.Optimizer],
    networks: Sequence[str] = NETWORKS,
    batches: Sequence[int] = BATCHES,
    clock: Callable[[], float] = time.perf_counter,
    test_batch: int = TEST_BATCH,
) -> list[Timing]:
    """Time a training step of each network at each batch size (``make_optimizer(model,
    batch)``'s optimizer, label-smoothed cross-entropy, bf16 autocast if ``bf16``), and a test
    batch of ``test_batch`` images (what the run tests in) of each network, on throwaway models
    and random images. The global random state is left alone."""
    if device.type == "cpu":
        keep_freed_memory()  # as the run will: about a quarter faster at batch 512
    timings = []
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        generator = torch.Generator().manual_seed(0)
        largest = max(max(batches), test_batch)
        images = torch.rand(largest, 3, 32, 32, generator=generator).to(device)
        images = images.contiguous(memory_format=torch.channels_last)
        targets = torch.randint(0, 10, (largest,), generator=generator).to(device)
        for network in networks:
            model = build_model(network).to(device, memory_format=torch.channels_last)
            with torch.no_grad(), torch.autocast(device.type, torch.bfloat16, enabled=bf16):
                model.eval()
                test = _fastest(lambda m=model: m(images[:test_batch]), device, clock)
            model.train()
            for batch in batches:
                optimizer = make_optimizer(model, batch)

                def step(
                    model: nn.Module = model,
                    batch: int = batch,
                    optimizer: torch.optim.Optimizer = optimizer,
                ) -> None:
                    with torch.autocast(device.type, torch.bfloat16, enabled=bf16):
                        out = model(images[:batch])
                        loss = nn.functional.cross_entropy(
                            out, targets[:batch], label_smoothing=0.2
                        )
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()

                timings.append(Timing(network, batch, _fastest(step, device, clock), test))
    return timings


def describe(budget_minutes: float, choice: Choice, precision_words: str) -> str:
    """The first line of a run with ``--budget``: what it chose, and why."""
    timing = choice.timing
    widths = "/".join(str(w) for w in build_model(timing.network).widths)  # type: ignore[union-attr]
    others = ", ".join(
        f"{network} {epochs}"
        for network, epochs in choice.alternatives.items()
        if network != timing.network
    )
    why = (
        f"the widest network that fits {MIN_EPOCHS} epochs"
        if choice.epochs >= MIN_EPOCHS
        else f"no network fits {MIN_EPOCHS} epochs; the one that fits the most"
    )
    capped = " (the most --budget trains)" if choice.epochs == MAX_EPOCHS else ""
    return (
        f"budget {budget_minutes:g} min: {timing.network} ({widths}), batch {timing.batch_size}, "
        f"{choice.epochs} epoch{'s' * (choice.epochs != 1)}{capped}, {precision_words}, "
        f"{timing.step_seconds * 1000:.0f} ms/step: about {choice.train_seconds / 60:.1f} min "
        f"of training, {choice.total_seconds / 60:.1f} min in all with the "
        f"{choice.probe_seconds:.0f} s probe and the tests; "
        f"{why} (epochs that fit: {others or 'no other network'})"
    )
