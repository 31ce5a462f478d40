"""The lecture's recipe, the default of ``cifar-course train``: the lesson net, CrossEntropyLoss,
SGD at lr 1e-2, batch 64, 10 epochs, ``ToTensor`` only.

Lesson 03 writes this loop out by hand (``train_one_epoch`` is the same loop). Two ways to run
it: the lecture's own, a ``DataLoader`` of PIL images; and ``--fast``, the same steps on data
held in memory, with the speed levers of ``cifar_course.fast`` (lesson 04).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from .. import distributed
from ..data import TensorData, get_datasets
from ..engine import Hyper, Recipe, setting
from ..errors import CourseError
from ..evaluate import loss_and_accuracy, progress_stream
from ..fast import FastTrainer, fastest_dtype
from ..models import build_model


@dataclass
class LectureHyper(Hyper):
    """The lecture's settings."""

    epochs: int = setting(10, "epochs to train")
    batch_size: int = setting(
        64, "images per step; under torchrun the global batch, split evenly over the processes"
    )
    lr: float = setting(1e-2, "SGD learning rate (the peak of the schedule, where there is one)")
    fast: bool = setting(
        False, "the faster loop: data in memory, channels_last, mixed precision where it pays"
    )
    log_every: int = setting(100)  # TensorBoard gets every log_every-th step's loss

    def validate(self) -> None:
        super().validate()
        if self.log_every < 1:
            raise CourseError(f"log_every must be at least 1, got {self.log_every}.")


def train_one_epoch(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    loss_fn: nn.Module,
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    writer: SummaryWriter | None = None,
    step: int = 0,
    log_every: int = 100,
    desc: str = "train",
    progress: bool = True,
) -> tuple[float, int]:
    """Train for one pass over ``batches``; return ``(mean loss, global step after the epoch)``.

    Logs the loss of every ``log_every``-th step to TensorBoard as ``train_loss``; ``progress``
    shows a progress bar.
    """
    model.train()
    total = torch.zeros((), device=device)
    count = 0
    for images, targets in tqdm(
        batches, desc=desc, leave=False, disable=not progress, file=progress_stream()
    ):
        images, targets = images.to(device), targets.to(device)
        loss = loss_fn(model(images), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        step += 1
        total += loss.detach() * len(targets)
        count += len(targets)
        if writer is not None and step % log_every == 0:
            writer.add_scalar("train_loss", loss.item(), step)
    if count == 0:
        raise CourseError("The training data is empty; there is nothing to train on.")
    return (total / count).item(), step


class Lecture(Recipe):
    """The lecture's recipe, with its DataLoader loop or, with ``fast``, the fast loop."""

    name = "lecture"
    hyper_type = LectureHyper
    logdir = "runs/lesson_net"
    hyper: LectureHyper

    def build(self) -> None:
        hyper, device = self.hyper, self.device
        self.logs_steps = not hyper.fast  # the DataLoader loop logs every log_every-th step
        self.train_set, self.test_set = get_datasets()
        self.arch = "lesson_net"
        self.model = build_model(self.arch).to(device)
        self.loss_fn = nn.CrossEntropyLoss()
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=hyper.lr)
        self.batch, self.steps_per_epoch = self.per_process(len(self.train_set))
        self.trainer: FastTrainer | None = None

    def start(self, saved: dict[str, Any] | None) -> str:
        job, device = self.job, self.device
        if self.hyper.fast:
            self.fast_train = TensorData(True, device)
            self.fast_test = TensorData(False, device) if self.main else None
            if job is None:
                dtype, _ = fastest_dtype(
                    self.model, self.optimizer, device, self.fast_train, self.batch
                )
                self.trainer = FastTrainer(self.model, self.optimizer, device, dtype)
                self.log(f"fast loop: mixed precision {dtype or 'off (fp32)'} after a speed probe")
            else:  # each process would probe on its own and might choose differently: fp32
                self.trainer = FastTrainer(
                    self.model, self.optimizer, device, wrap=lambda m: distributed.wrap(m, job)
                )
                self.log("fast loop: fp32 (under torchrun the mixed-precision probe is skipped)")
        else:
            self.train_model = self.model if job is None else distributed.wrap(self.model, job)
            self.test_loader = DataLoader(self.test_set, batch_size=self.hyper.batch_size)
        epochs, per = self.hyper.epochs, "" if job is None else f" ({self.batch} per process)"
        return (
            f"training lesson_net on {distributed.describe(job, device)} with "
            f"{len(self.train_set):,} train / {len(self.test_set):,} test images: {epochs} "
            f"epoch{'s' * (epochs != 1)}, batch {self.hyper.batch_size}{per}, SGD lr "
            f"{self.hyper.lr}" + (" (fast loop)" if self.hyper.fast else "")
        )

    def train_epoch(self, epoch: int, writer: SummaryWriter | None) -> float | torch.Tensor:
        if self.trainer is not None:
            generator, share = self.shuffle(epoch, len(self.fast_train))
            return self.trainer.train_epoch(self.fast_train, self.batch, generator, indices=share)
        if self.job is None:
            generator = torch.Generator().manual_seed(self.seed * 1000 + epoch)
            loader = DataLoader(self.train_set, self.batch, shuffle=True, generator=generator)
        else:
            sampler = distributed.sampler(len(self.train_set), self.seed * 1000, self.job)
            sampler.set_epoch(epoch)  # a new shuffle each epoch, the same on every process
            loader = DataLoader(self.train_set, self.batch, sampler=sampler)
        loss, _ = train_one_epoch(
            self.train_model,
            loader,
            self.loss_fn,
            self.optimizer,
            self.device,
            writer,
            step=epoch * self.steps_per_epoch,
            log_every=self.hyper.log_every,
            desc=f"epoch {epoch + 1}/{self.hyper.epochs}",
            progress=self.main,
        )
        return loss

    def evaluate(self, epoch: int) -> dict[str, float]:
        """The whole test set, once, with the plain model: loss and accuracy."""
        if self.trainer is not None:
            assert self.fast_test is not None
            loss, accuracy = self.trainer.evaluate(self.fast_test)
        else:
            loss, accuracy = loss_and_accuracy(
                self.model, self.test_loader, self.loss_fn, self.device
            )
        return {"test_loss": loss, "test_accuracy": accuracy}


RECIPE = Lecture
