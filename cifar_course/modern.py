"""The modern recipe behind ``cifar-course train --recipe modern`` (lesson 06's end point).

In the spirit of the fast CIFAR-10 speed runs (Page's ResNet-9 series, Keller Jordan's airbench),
written small for a CPU: a VGG-like network with batch normalization and GELU, input
normalization inside the model, flip-and-translate augmentation done on whole batches, label
smoothing, SGD with Nesterov momentum and a triangular learning-rate schedule over 12 epochs,
and test-time augmentation with flips and one-pixel shifts.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils.tensorboard import SummaryWriter

from . import distributed
from .data import TensorData
from .device import keep_freed_memory, pick_device, synchronize
from .distributed import Distributed
from .models import ModernNet
from .training import (
    TrainConfig,
    init_from,
    refuse_to_overwrite,
    restart_resume,
    resume,
    run_recipe,
    save_epoch,
    stop_if_diverged,
)


def augment(images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random horizontal flip and a random shift of up to 2 pixels (reflect-padded), per image."""
    flip = torch.rand(len(images), generator=generator) < 0.5
    images = torch.where(flip.to(images.device).view(-1, 1, 1, 1), images.flip(3), images)
    return translate(images, generator)


def draw_shifts(
    n: int, generator: torch.Generator | None, device: torch.device | str
) -> torch.Tensor:
    """Random shifts ``[n, 2]`` (0 to 4 pixels, down and right, of a 2-pixel reflect padding) for
    ``n`` images, drawn on the CPU, so that a seed gives the same images everywhere, and copied
    to ``device``: from pinned memory on a GPU, without making the CPU wait for it. Drawing an
    epoch's shifts at once gives the very numbers drawn batch by batch."""
    shifts = torch.randint(0, 5, (n, 2), generator=generator)
    if torch.device(device).type == "cuda":
        return shifts.pin_memory().to(device, non_blocking=True)
    return shifts.to(device)


def translate(
    images: torch.Tensor,
    generator: torch.Generator | None = None,
    shifts: torch.Tensor | None = None,
) -> torch.Tensor:
    """Shift each image by a random 0 to 2 pixels in each direction (reflect-padded).

    One gather for the whole batch, with no loop over the 25 possible shifts. The shifts come
    from ``draw_shifts``, unless ``shifts`` ``[n, 2]`` gives them, drawn already (for a whole
    epoch at once, in the speed-run recipe).
    """
    n, device = len(images), images.device
    padded = nn.functional.pad(images, (2, 2, 2, 2), mode="reflect")
    if shifts is None:
        shifts = draw_shifts(n, generator, device)
    pixels = torch.arange(32, device=device)
    rows = (shifts[:, 0, None] + pixels)[:, None, :, None]  # [n, 1, 32, 1]
    cols = (shifts[:, 1, None] + pixels)[:, None, None, :]  # [n, 1, 1, 32]
    batch = torch.arange(n, device=device)[:, None, None, None]
    channels = torch.arange(images.shape[1], device=device)[None, :, None, None]
    out = padded[batch, channels, rows, cols]
    if images.is_contiguous(memory_format=torch.channels_last) and not images.is_contiguous():
        return out.contiguous(memory_format=torch.channels_last)
    return out


def triangular_lr(
    step: int,
    total: int,
    peak: float,
    warmup: float = 0.2,
    start: float = 0.0,
    end: float = 0.0,
) -> float:
    """Learning rate at ``step``: linear from ``start * peak`` to ``peak`` over the first
    ``warmup`` of training, then linearly down to ``end * peak`` (by default from 0 and to 0)."""
    rise = max(1, int(total * warmup))
    if step < rise:
        return peak * (start + (1 - start) * step / rise)
    return peak * (end + (1 - end) * max(0.0, (total - step) / max(1, total - rise)))


_HISTORY_KEYS = {
    "plain": "test_accuracy",
    "flip": "test_accuracy_flip",
    "flip_shift": "test_accuracy_tta",
}


def _flip_average(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    return (model(images) + model(images.flip(3))) / 2


@torch.no_grad()
def evaluate_tta(
    model: nn.Module, data: TensorData, batch_size: int = 1000, tta: bool = True
) -> dict[str, float]:
    """Test accuracy on ``data`` three ways, in one pass over it (only the first if not ``tta``).

    - ``"plain"``: each image once;
    - ``"flip"``: the average of the scores of the image and its mirror image (2 passes);
    - ``"flip_shift"``: that average, averaged again with the one of the image shifted by one
      pixel up-left and the one shifted one pixel down-right (reflect-padded; 6 passes), as in
      airbench. Half the weight stays on the unshifted image.
    """
    model.eval()
    correct: dict[str, int] = {}
    for images, targets in data.batches(batch_size, channels_last=True):
        views = {"plain": model(images)}
        if tta:
            views["flip"] = (views["plain"] + model(images.flip(3))) / 2
            padded = nn.functional.pad(images, (1, 1, 1, 1), mode="reflect")
            shifted = (
                _flip_average(model, padded[:, :, :32, :32])
                + _flip_average(model, padded[:, :, 2:, 2:])
            ) / 2
            views["flip_shift"] = (views["flip"] + shifted) / 2
        for name, logits in views.items():
            correct[name] = correct.get(name, 0) + int((logits.argmax(1) == targets).sum())
    return {name: hits / len(data) for name, hits in correct.items()}


def fit_modern(config: TrainConfig, log: Callable[[str], None] = print) -> list[dict[str, float]]:
    """Train ``ModernNet`` with the modern recipe, checkpointing each epoch; return the history.

    Under torchrun it trains with DistributedDataParallel (see ``cifar_course.distributed``).
    Each process then keeps its own BatchNorm batch statistics, as DDP does by default.
    """
    return run_recipe(_fit_modern, config, log)


def start_process(config: TrainConfig, job: Distributed | None) -> tuple[bool, torch.device, int]:
    """Common start of both in-memory recipes: (is this the main process, its device, its share
    of the batch). Seeds torch and, on a CPU, keeps freed memory for the next step."""
    device = job.device if job is not None else pick_device(config.device)
    if device.type == "cpu":
        keep_freed_memory()  # about a quarter faster on Linux CPUs at batch 512; see its docstring
    torch.manual_seed(config.seed)
    main = job is None or job.is_main
    return main, device, distributed.per_process_batch(config.batch_size, job)


def steps_per_epoch(images: int, batch_size: int, job: Distributed | None) -> int:
    """Optimizer steps in one epoch of ``images`` for this process (its share under torchrun)."""
    share = images if job is None else -(-images // job.world_size)
    return -(-share // batch_size)


def end_epoch(
    config: TrainConfig,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    test: TensorData,
    writer: SummaryWriter,
    history: list[dict[str, float]],
    log: Callable[[str], None],
    *,
    epoch: int,
    step: int,
    train_loss: float,
    seconds: float,
    extra: dict[str, Any] | None = None,
) -> None:
    """Rank 0's end of an epoch (``epoch`` counts from 1): test ``model``, log to TensorBoard,
    append a row to ``history``, save a checkpoint of ``model`` (with ``extra``, see
    ``save_checkpoint``) and print one line."""
    # 6-view test-time augmentation costs 6 passes over the test set: last epoch only
    accuracies = evaluate_tta(model, test, tta=epoch == config.epochs)
    writer.add_scalar("train_loss", train_loss, step)
    for name, value in accuracies.items():
        writer.add_scalar(_HISTORY_KEYS[name], value, epoch)
    writer.flush()
    history.append(
        {
            "epoch": epoch,
            "train_loss": train_loss,
            "seconds": seconds,
            **{_HISTORY_KEYS[name]: value for name, value in accuracies.items()},
        }
    )
    path = save_epoch(config, model, optimizer, epoch, history, extra)
    log(
        f"epoch {epoch:2d}/{config.epochs}  train loss {train_loss:.4f}  "
        f"test accuracy {accuracies['plain']:.2%}  ({seconds:.1f} s)  saved {path}"
    )


def log_final(history: list[dict[str, float]], log: Callable[[str], None]) -> None:
    """Print the training time and the final accuracies, with TTA where the last epoch has them."""
    log(f"training time {sum(h['seconds'] for h in history):.1f} s")
    last = history[-1]
    if "test_accuracy_tta" in last:
        log(
            f"final test accuracy: {last['test_accuracy_tta']:.2%} (with flip-and-shift TTA; "
            f"{last['test_accuracy_flip']:.2%} with flip TTA, {last['test_accuracy']:.2%} without)"
        )
    else:  # resumed from a run that had already finished, or from an older checkpoint
        log(f"final test accuracy: {last['test_accuracy']:.2%} (without TTA)")


def _fit_modern(
    config: TrainConfig, job: Distributed | None, log: Callable[[str], None]
) -> list[dict[str, float]]:
    main, device, batch_size = start_process(config, job)
    model = ModernNet().to(device, memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=0.0, momentum=0.9, nesterov=True, weight_decay=5e-4
    )
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.2)
    history: list[dict[str, float]] = []
    start = 0
    restart_resume(config, "modern_net", job, log)
    if config.resume:
        start, history = resume(config, model, optimizer, device, log)
    if config.init_from:
        init_from(config, model, log)
    refuse_to_overwrite(config, "modern_net", start, job)
    train_model = model if job is None else distributed.wrap(model, job)
    train = TensorData(True, device)
    test = TensorData(False, device) if main else None
    per_epoch = steps_per_epoch(len(train), batch_size, job)
    total = per_epoch * config.epochs
    step = start * per_epoch
    writer = SummaryWriter(config.logdir, purge_step=step or None) if main else None
    where = distributed.describe(job, device)
    log(
        f"training modern_net on {where}: {config.epochs} epoch{'s' * (config.epochs != 1)}, "
        f"batch {config.batch_size}, SGD nesterov, peak lr {config.lr}, label smoothing 0.2, "
        "flip+translate, flip+shift TTA"
    )
    try:
        for epoch in range(start, config.epochs):
            order = torch.Generator().manual_seed(config.seed * 1000 + epoch)
            mine = None
            if job is not None:  # this process's share of the epoch, as DistributedSampler's
                mine = distributed.shard(len(train), config.seed * 1000, epoch, job)
            train_model.train()
            began = time.perf_counter()
            total_loss = torch.zeros((), device=device)
            seen = 0
            for images, targets in train.batches(batch_size, True, order, True, order=mine):
                for group in optimizer.param_groups:
                    group["lr"] = triangular_lr(step, total, config.lr)
                loss = loss_fn(train_model(augment(images, order)), targets)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total_loss += loss.detach() * len(targets)
                seen += len(targets)
                step += 1
            synchronize(device)  # GPU work is queued: wait for it before reading the clock
            seconds = time.perf_counter() - began
            train_loss = distributed.mean_over_processes((total_loss / seen).item(), job)
            stop_if_diverged(train_loss, epoch + 1)  # on every process: they hold the same loss
            if main:
                assert test is not None and writer is not None
                end_epoch(
                    config,
                    model,
                    optimizer,
                    test,
                    writer,
                    history,
                    log,
                    epoch=epoch + 1,
                    step=step,
                    train_loss=train_loss,
                    seconds=seconds,
                )
            distributed.barrier(job)  # the others wait while rank 0 evaluates and saves
    finally:
        if writer is not None:
            writer.close()
    if main:
        log_final(history, log)
    return history
