"""``cifar-course benchmark``: the lecture's loop against the fast loop, in one process, same data.

Both loops train the lesson net from the same initial weights with the same recipe (SGD, learning
rate, batch size, epochs) on the same device. Each loop is warmed up first, and the clock is read
only after synchronizing the device. Speed is reported as a ratio measured in this one run.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import torch
from torch import nn
from torch.utils.data import DataLoader

from .data import TensorData, get_datasets
from .device import Timer, describe_machine, pick_device
from .engine import seed_everything
from .errors import CourseError
from .evaluate import loss_and_accuracy
from .fast import FastTrainer, fastest_dtype
from .models import LessonNet
from .recipes.lecture import LectureHyper, train_one_epoch

WARMUP_STEPS = 20


def _rss_bytes() -> int:
    """Resident memory of this process (Linux), else its peak so far."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class PeakMemory:
    """Peak memory while the block runs: GPU memory allocated on CUDA, else the process's RSS."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, _rss_bytes())

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            self.peak = _rss_bytes()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.device.type == "cuda":
            self.peak = torch.cuda.max_memory_allocated(self.device)
        elif self._thread is not None:
            self._stop.set()
            self._thread.join()
            self.peak = max(self.peak, _rss_bytes())


@dataclass
class LoopResult:
    """Timing, memory and accuracy of one loop."""

    name: str
    seconds: float
    epochs: int
    images: int
    peak_bytes: int
    test_accuracy: float

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds


def _fresh(seed: int, lr: float, device: torch.device) -> tuple[nn.Module, torch.optim.SGD]:
    seed_everything(seed)
    model = LessonNet().to(device)
    return model, torch.optim.SGD(model.parameters(), lr=lr)


def run_benchmark(
    device_name: str = "auto",
    epochs: int = 1,
    batch_size: int | None = None,
    lr: float | None = None,
    seed: int = 0,
    log: Callable[[str], None] = print,
) -> tuple[LoopResult, LoopResult]:
    """Train with the lecture's loop, then with the fast loop, ``epochs`` each; compare them.
    ``batch_size`` and ``lr``: the lecture recipe's unless given."""
    batch_size = batch_size or LectureHyper().batch_size
    lr = lr or LectureHyper().lr
    if epochs < 1:
        raise CourseError(f"--epochs must be at least 1, got {epochs}.")
    if batch_size < 1:
        raise CourseError(f"--batch-size must be at least 1, got {batch_size}.")
    device = pick_device(device_name)
    train_set, test_set = get_datasets()
    fast_train = TensorData(True, device)
    test_loader = DataLoader(test_set, batch_size=500)
    loss_fn = nn.CrossEntropyLoss()
    memory_kind = "GPU memory" if device.type == "cuda" else "process RSS"
    log(f"benchmark on {describe_machine(device)}")
    log(
        f"recipe: lesson net, SGD lr {lr}, batch {batch_size}, {epochs} epoch(s) of "
        f"{len(train_set):,} images; {WARMUP_STEPS} warm-up steps per loop"
    )

    def shuffles(epoch: int) -> torch.Generator:
        return torch.Generator().manual_seed(seed * 1000 + epoch)

    # 1. The lecture's loop: PIL + ToTensor DataLoader, fp32, NCHW.
    warm, warm_optimizer = _fresh(seed + 1, lr, device)
    warmup = itertools.islice(DataLoader(train_set, batch_size), WARMUP_STEPS)
    train_one_epoch(warm, warmup, loss_fn, warm_optimizer, device, desc="warm-up")
    model, optimizer = _fresh(seed, lr, device)
    with PeakMemory(device) as memory, Timer(device) as timer:
        for epoch in range(epochs):
            loader = DataLoader(train_set, batch_size, shuffle=True, generator=shuffles(epoch))
            train_one_epoch(model, loader, loss_fn, optimizer, device, desc="lecture loop")
    accuracy = loss_and_accuracy(model, test_loader, loss_fn, device)[1]
    lecture = LoopResult(
        "lecture", timer.seconds, epochs, epochs * len(train_set), memory.peak, accuracy
    )

    # 2. The fast loop: the same recipe on TensorData, with the speed levers on.
    model, optimizer = _fresh(seed, lr, device)
    dtype, timings = fastest_dtype(model, optimizer, device, fast_train, batch_size)
    trainer = FastTrainer(model, optimizer, device, dtype)
    probe = ", ".join(f"{k} {v:.3f} s" for k, v in timings.items()) or "not needed"
    log(
        "fast loop: in-memory uint8 data, channels_last, no per-step sync, "
        f"CUDA graphs {'on' if trainer.uses_graphs else 'off'}, mixed precision "
        f"{trainer.dtype or 'off (fp32)'} (speed probe: {probe})"
    )
    warm, warm_optimizer = _fresh(seed + 1, lr, device)
    warm_trainer = FastTrainer(warm, warm_optimizer, device, dtype)
    warm_trainer.train_epoch(fast_train, batch_size, shuffles(-1), max_batches=WARMUP_STEPS)
    with PeakMemory(device) as memory, Timer(device) as timer:
        for epoch in range(epochs):
            trainer.train_epoch(fast_train, batch_size, shuffles(epoch))
    accuracy = loss_and_accuracy(trainer.model, test_loader, loss_fn, device)[1]
    fast = LoopResult("fast", timer.seconds, epochs, epochs * len(train_set), memory.peak, accuracy)

    log("")
    log(
        f"{'loop':<9}{'images/s':>10}{'epoch (s)':>11}{'ratio':>8}{'peak ' + memory_kind:>20}"
        f"{'test accuracy':>15}"
    )
    for r in (lecture, fast):
        log(
            f"{r.name:<9}{r.images_per_second:>10,.0f}{r.seconds / r.epochs:>11.2f}"
            f"{r.images_per_second / lecture.images_per_second:>7.2f}x"
            f"{r.peak_bytes / 2**20:>16,.0f} MiB{r.test_accuracy:>15.2%}"
        )
    log(
        f"test accuracy after {epochs} epoch(s): fast {fast.test_accuracy:.2%}, "
        f"lecture {lecture.test_accuracy:.2%} "
        f"(difference {100 * (fast.test_accuracy - lecture.test_accuracy):+.2f} points)"
    )
    log(
        f"speed-up (fast / lecture, images per second): "
        f"{fast.images_per_second / lecture.images_per_second:.2f}x"
    )
    return lecture, fast
