"""The modern recipe behind ``cifar-course train --recipe modern`` (lesson 06's end point).

In the spirit of the fast CIFAR-10 speed runs (Page's ResNet-9 series, Keller Jordan's airbench),
written small for a CPU: a VGG-like network with batch normalization and GELU, input
normalization inside the model, flip-and-translate augmentation done on whole batches, label
smoothing, SGD with Nesterov momentum and a triangular learning-rate schedule over 12 epochs,
and test-time augmentation with flips and one-pixel shifts. Under torchrun each process keeps
its own BatchNorm batch statistics, as DistributedDataParallel does by default.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.tensorboard import SummaryWriter

from .. import distributed
from ..augment import augment, triangular_lr
from ..data import TensorData
from ..device import keep_freed_memory
from ..engine import History, Hyper, Recipe, setting
from ..errors import CourseError
from ..evaluate import TTA_KEYS, evaluate_tta, tta_report
from ..models import ModernNet


@dataclass
class ModernHyper(Hyper):
    """Lesson 06's settings."""

    epochs: int = setting(12, "epochs to train")
    batch_size: int = setting(512, "images per step (the global batch under torchrun)")
    lr: float = setting(0.2, "the peak of the triangular learning-rate schedule")
    momentum: float = setting(0.9)  # Nesterov
    weight_decay: float = setting(5e-4)
    label_smoothing: float = setting(0.2)

    def validate(self) -> None:
        super().validate()
        for name, value, top in (
            ("momentum", self.momentum, 1.0),
            ("label_smoothing", self.label_smoothing, 1.0),
            ("weight_decay", self.weight_decay, 1.0),
        ):
            if not 0 <= value < top:
                raise CourseError(f"{name} must be from 0 to below {top:g}, got {value}.")


class Modern(Recipe):
    """``ModernNet`` with lesson 06's recipe, its data in memory."""

    name = "modern"
    hyper_type = ModernHyper
    logdir = "runs/modern_net"
    hyper: ModernHyper

    def build(self) -> None:
        hyper, device = self.hyper, self.device
        if device.type == "cpu":
            keep_freed_memory()  # about a quarter faster on Linux CPUs at batch 512
        self.arch = "modern_net"
        self.model = ModernNet().to(device, memory_format=torch.channels_last)
        self.optimizer = torch.optim.SGD(
            self.model.parameters(),
            lr=0.0,  # set each step by the schedule
            momentum=hyper.momentum,
            nesterov=True,
            weight_decay=hyper.weight_decay,
        )
        self.loss_fn = nn.CrossEntropyLoss(label_smoothing=hyper.label_smoothing)

    def start(self, saved: dict[str, Any] | None) -> str:
        job, device = self.job, self.device
        # The data, once the run is allowed to start (refused runs load nothing).
        self.train = TensorData(True, device)
        self.test = TensorData(False, device) if self.main else None
        self.batch, self.steps_per_epoch = self.per_process(len(self.train))
        self.train_model = self.model if job is None else distributed.wrap(self.model, job)
        h = self.hyper
        return (
            f"training modern_net on {distributed.describe(job, device)}: {h.epochs} "
            f"epoch{'s' * (h.epochs != 1)}, batch {h.batch_size}, SGD nesterov, peak lr {h.lr}, "
            f"label smoothing {h.label_smoothing}, flip+translate, flip+shift TTA"
        )

    def train_epoch(self, epoch: int, writer: SummaryWriter | None) -> torch.Tensor:
        generator, share = self.shuffle(epoch, len(self.train))
        step, total = epoch * self.steps_per_epoch, self.steps_per_epoch * self.hyper.epochs
        self.train_model.train()
        loss_sum = torch.zeros((), device=self.device)
        seen = 0
        batches = self.train.batches(
            self.batch, shuffle=True, generator=generator, channels_last=True, indices=share
        )
        for images, targets in batches:
            for group in self.optimizer.param_groups:
                group["lr"] = triangular_lr(step, total, self.hyper.lr)
            loss = self.loss_fn(self.train_model(augment(images, generator)), targets)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            loss_sum += loss.detach() * len(targets)
            seen += len(targets)
            step += 1
        return loss_sum / seen

    def evaluate(self, epoch: int) -> dict[str, float]:
        """Test accuracy, and with test-time augmentation after the last epoch only (6 passes
        over the test set)."""
        assert self.test is not None
        views = evaluate_tta(self.tested, self.test, tta=epoch == self.hyper.epochs)
        return {TTA_KEYS[name]: value for name, value in views.items()}

    def report(self, history: History) -> list[str]:
        return tta_report(history)


RECIPE = Modern
