"""The modern recipe behind ``cifar-course train --recipe modern`` (lesson 06's end point).

In the spirit of the fast CIFAR-10 speed runs (Page's ResNet-9 series, Keller Jordan's airbench),
written small for a CPU: a VGG-like network with batch normalization and GELU, input
normalization inside the model, flip-and-translate augmentation done on whole batches, label
smoothing, SGD with Nesterov momentum and a triangular learning-rate schedule, and test-time
flip augmentation.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict

import torch
from torch import nn
from torch.utils.tensorboard import SummaryWriter

from .checkpoints import save_checkpoint
from .data import TensorData
from .device import pick_device
from .models import ModernNet
from .training import TrainConfig, checkpoint_path, resume


def augment(images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random horizontal flip and a random shift of up to 2 pixels (reflect-padded), per image."""
    n = len(images)
    flip = torch.rand(n, generator=generator) < 0.5
    images = torch.where(flip.to(images.device).view(-1, 1, 1, 1), images.flip(3), images)
    padded = nn.functional.pad(images, (2, 2, 2, 2), mode="reflect")
    shifts = torch.randint(0, 5, (n, 2), generator=generator)
    out = torch.empty_like(images)
    for dy in range(5):
        for dx in range(5):
            rows = ((shifts[:, 0] == dy) & (shifts[:, 1] == dx)).nonzero().flatten()
            if len(rows):
                rows = rows.to(images.device)
                out[rows] = padded[rows, :, dy : dy + 32, dx : dx + 32]
    return out


def triangular_lr(step: int, total: int, peak: float, warmup: float = 0.2) -> float:
    """Learning rate at ``step``: linear from 0 to ``peak`` over the first ``warmup`` of training,
    then linearly down to 0."""
    rise = max(1, int(total * warmup))
    if step < rise:
        return peak * step / rise
    return peak * max(0.0, (total - step) / max(1, total - rise))


@torch.no_grad()
def evaluate_tta(model: nn.Module, data: TensorData, flip: bool = True) -> tuple[float, float]:
    """``(accuracy, accuracy with flip test-time augmentation)`` on ``data``."""
    model.eval()
    plain = tta = 0
    for images, targets in data.batches(1000, channels_last=True):
        logits = model(images)
        plain += (logits.argmax(1) == targets).sum().item()
        if flip:
            logits = logits + model(images.flip(3))
        tta += (logits.argmax(1) == targets).sum().item()
    return plain / len(data), tta / len(data)


def fit_modern(config: TrainConfig, log: Callable[[str], None] = print) -> list[dict[str, float]]:
    """Train ``ModernNet`` with the modern recipe, checkpointing each epoch; return the history."""
    config.validate()
    device = pick_device(config.device)
    torch.manual_seed(config.seed)
    model = ModernNet().to(device, memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=0.0, momentum=0.9, nesterov=True, weight_decay=5e-4
    )
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.2)
    history: list[dict[str, float]] = []
    start = 0
    if config.resume:
        start, history = resume(config, model, optimizer, device, log)
    train, test = TensorData(True, device), TensorData(False, device)
    steps_per_epoch = -(-len(train) // config.batch_size)
    total = steps_per_epoch * config.epochs
    step = start * steps_per_epoch
    writer = SummaryWriter(config.logdir, purge_step=step or None)
    log(
        f"training modern_net on {device}: {config.epochs} epochs, batch {config.batch_size}, "
        f"SGD nesterov, peak lr {config.lr}, label smoothing 0.2, flip+translate, flip TTA"
    )
    try:
        for epoch in range(start, config.epochs):
            order = torch.Generator().manual_seed(config.seed * 1000 + epoch)
            model.train()
            began = time.perf_counter()
            total_loss = torch.zeros((), device=device)
            for images, targets in train.batches(config.batch_size, True, order, True):
                for group in optimizer.param_groups:
                    group["lr"] = triangular_lr(step, total, config.lr)
                loss = loss_fn(model(augment(images, order)), targets)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total_loss += loss.detach() * len(targets)
                step += 1
            seconds = time.perf_counter() - began
            accuracy, tta = evaluate_tta(model, test)
            train_loss = (total_loss / len(train)).item()
            writer.add_scalar("train_loss", train_loss, step)
            writer.add_scalar("test_accuracy", accuracy, epoch + 1)
            writer.add_scalar("test_accuracy_tta", tta, epoch + 1)
            writer.flush()
            history.append(
                {
                    "epoch": epoch + 1,
                    "train_loss": train_loss,
                    "test_accuracy": accuracy,
                    "test_accuracy_tta": tta,
                    "seconds": seconds,
                }
            )
            path = save_checkpoint(
                checkpoint_path(config.out, epoch + 1, "modern_net"),
                model,
                optimizer,
                epoch + 1,
                history,
                asdict(config),
            )
            log(
                f"epoch {epoch + 1:2d}/{config.epochs}  train loss {train_loss:.4f}  "
                f"test accuracy {accuracy:.2%}  with flip TTA {tta:.2%}  ({seconds:.1f} s)  "
                f"saved {path}"
            )
    finally:
        writer.close()
    training_seconds = sum(h["seconds"] for h in history)
    log(f"training time {training_seconds:.0f} s")
    log(
        f"final test accuracy: {history[-1]['test_accuracy_tta']:.2%} (with flip TTA; "
        f"{history[-1]['test_accuracy']:.2%} without)"
    )
    return history
