"""The speed-run recipe behind ``cifar-course train --recipe speedrun`` (lesson 08).

Written for this course from the published descriptions of the fast CIFAR-10 runs (David Page's
ResNet-9 posts, 2018; Keller Jordan, "94% on CIFAR-10 in 3.29 seconds on a single GPU",
arXiv:2404.00498). On top of lesson 06's recipe it adds:

- a frozen **whitening** first layer: 2x2 filters computed from the training images' own patches,
  so that the filters' outputs are uncorrelated and of unit variance (``whitening_filters``);
- **BatchNorm without a learned scale** and with a faster-moving running average (momentum 0.4);
- **alternating flips**: each image is mirrored in every other epoch, instead of at random
  (``alternating_flip``);
- an **exponential moving average** of the weights, evaluated instead of the last weights (``EMA``);
- a shorter schedule: 8 epochs on a CPU, 10 on a GPU, against lesson 06's 12.

On a CUDA GPU it trains ``SpeedNet`` at airbench94's widths (64/256/256), at batch 1024 and in bf16
autocast where the GPU has native bf16 (``uses_bf16``); on a CPU, where every multiply-add costs
real time, the narrower ``SpeedNetSmall`` at batch 512 in fp32. ``--epochs``,
``--batch-size`` and ``--lr`` keep their meaning; the defaults are in ``DEFAULTS``.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable

import torch
from torch import nn
from torch.utils.tensorboard import SummaryWriter

from . import distributed
from .data import TensorData
from .device import keep_freed_memory, pick_device, synchronize
from .distributed import Distributed
from .models import SpeedNet, SpeedNetSmall, arch_name
from .modern import _HISTORY_KEYS, evaluate_tta, translate, triangular_lr
from .training import TrainConfig, init_from, restart_resume, resume, run_recipe, save_epoch

WHITEN_KERNEL = SpeedNet.whiten_kernel
WHITEN_EPS = 5e-4  # added to each eigenvalue: keeps near-constant patch directions from exploding
LABEL_SMOOTHING = 0.2
EMA_DECAY = 0.99  # per step; the average covers about the last 100 steps
EMA_START = 0.5  # start averaging halfway through training
WHITEN_IMAGES = 5000  # the whitening filters come from the patches of this many training images
WHITEN_BIAS_EPOCHS = 3  # the whitening layer's bias learns for this many epochs, then freezes
WARMUP = 0.23  # share of the steps over which the learning rate rises


def make_optimizer(model: SpeedNet) -> torch.optim.SGD:
    """Nesterov SGD in three groups: weights with decay, other parameters without, and the
    whitening layer's bias (see ``set_lr``). Frozen parameters are left out."""
    decay, rest = [], []
    for name, p in model.named_parameters():
        if p.requires_grad and name != "whiten.bias":
            (decay if p.ndim > 1 else rest).append(p)
    return torch.optim.SGD(
        [
            {"params": decay, "weight_decay": 5e-4},
            {"params": rest, "weight_decay": 0.0},
            {"params": [model.whiten.bias], "weight_decay": 0.0},
        ],
        lr=0.0,
        momentum=0.9,
        nesterov=True,
    )


def set_lr(optimizer: torch.optim.SGD, lr: float, epoch: int) -> None:
    """Set every group's learning rate; the whitening bias's is 0 from ``WHITEN_BIAS_EPOCHS`` on.

    (A learning rate of 0 freezes it: unlike ``requires_grad_(False)`` mid-run, that works
    unchanged under DistributedDataParallel.)
    """
    *groups, whiten_bias = optimizer.param_groups
    for group in groups:
        group["lr"] = lr
    whiten_bias["lr"] = lr if epoch < WHITEN_BIAS_EPOCHS else 0.0


def patches(images: torch.Tensor, kernel: int = WHITEN_KERNEL) -> torch.Tensor:
    """Every ``kernel`` x ``kernel`` patch of ``images`` ``[N,3,H,W]``, as rows ``[M, 3*k*k]``."""
    cols = nn.functional.unfold(images, kernel)  # [N, 3*k*k, positions]
    return cols.transpose(1, 2).reshape(-1, cols.shape[1])


def whitening_filters(images: torch.Tensor, eps: float = WHITEN_EPS) -> torch.Tensor:
    """Filters ``[3*k*k, 3, k, k]`` whose outputs on the patches of ``images`` are white.

    With the patches' covariance ``C = V diag(lambda) V^T``, filter ``i`` is eigenvector ``v_i``
    divided by ``sqrt(lambda_i + eps)``: its output on a patch has variance
    ``lambda_i / (lambda_i + eps)``, nearly 1, and outputs of different filters are uncorrelated.
    The first layer then hands the next one every direction of colour and edge at the same scale,
    instead of mostly overall brightness, the direction in which natural image patches vary most.
    """
    rows = patches(images.float()).double()
    rows = rows - rows.mean(0)
    covariance = rows.T @ rows / (len(rows) - 1)
    eigenvalues, eigenvectors = torch.linalg.eigh(covariance)
    filters = eigenvectors.T / torch.sqrt(eigenvalues + eps)[:, None]
    k = WHITEN_KERNEL
    return filters.flip(0).float().reshape(-1, 3, k, k)  # largest eigenvalue first


@torch.no_grad()
def init_whitening(model: SpeedNet, images: torch.Tensor) -> None:
    """Set ``model.whiten`` from ``images`` in [0, 1] (normalized as the model does).

    Computed on the CPU in float64, wherever the model and the images are (Apple's MPS has no
    float64), then copied to the model's device.
    """
    normalized = (images.cpu() - model.mean.cpu()) / model.std.cpu()
    filters = whitening_filters(normalized)
    # Centre each output: a patch at the data's mean gives 0 before the GELU.
    mean_patch = patches(normalized).mean(0)
    centre = -(filters.reshape(len(filters), -1) @ mean_patch)
    model.whiten.weight.copy_(torch.cat([filters, -filters]))
    model.whiten.bias.copy_(torch.cat([centre, -centre]))


def alternating_flip(base: torch.Tensor, epoch: int) -> torch.Tensor:
    """Which images to mirror in ``epoch`` (0-based), given a random choice ``base`` for epoch 0.

    Random flips show an image the same way in two consecutive epochs half of the time. Here every
    image is flipped in every other epoch, so each pair of epochs shows both versions once.
    """
    return base if epoch % 2 == 0 else ~base


class EMA:
    """An exponential moving average of a model's weights and buffers, updated every step.

    ``update`` sets every floating-point tensor (weights and BatchNorm's running statistics) to
    ``average = decay * average + (1 - decay) * current``; ``decay`` 0 copies. Integer buffers
    (BatchNorm's batch counter) are copied. The average lives in ``self.model``, a copy of the
    model that evaluation and checkpoints use.
    """

    def __init__(self, model: nn.Module, decay: float = EMA_DECAY) -> None:
        if not 0 <= decay < 1:
            raise ValueError(f"the EMA's decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module, decay: float | None = None) -> None:
        d = self.decay if decay is None else decay
        current = model.state_dict()
        for name, average in self.model.state_dict().items():
            if average.is_floating_point():
                average.lerp_(current[name], 1 - d)
            else:
                average.copy_(current[name])


DEFAULTS: dict[str, dict[str, float | int | bool]] = {
    # epochs, global batch, peak learning rate (for SGD on the mean loss of a batch), weight EMA
    "cuda": {"epochs": 10, "batch_size": 1024, "lr": 0.4, "ema": True},
    "cpu": {"epochs": 8, "batch_size": 512, "lr": 0.2, "ema": True},
}


def uses_bf16(device: torch.device) -> bool:
    """bf16 autocast on CUDA GPUs with native bf16 (Ampere, compute capability 8, or newer).

    Everything else trains in fp32: older GPUs (Colab's T4) would emulate bf16, slowly, and on a
    CPU the course's probes found bf16 slower or unsupported (lessons 04 and 08)."""
    return device.type == "cuda" and torch.cuda.get_device_capability(device)[0] >= 8


def model_for(device: torch.device) -> SpeedNet:
    """``SpeedNet`` on a CUDA GPU, ``SpeedNetSmall`` elsewhere."""
    return SpeedNet() if device.type == "cuda" else SpeedNetSmall()


def fit_speedrun(
    config: TrainConfig, log: Callable[[str], None] = print
) -> list[dict[str, float]]:
    """Train the speed-run network, checkpointing the weight average each epoch; return the
    history. Under torchrun it trains with DistributedDataParallel, like the other recipes."""
    return run_recipe(_fit_speedrun, config, log)


def _fit_speedrun(
    config: TrainConfig, job: Distributed | None, log: Callable[[str], None]
) -> list[dict[str, float]]:
    main = job is None or job.is_main
    device = job.device if job is not None else pick_device(config.device)
    batch_size = distributed.per_process_batch(config.batch_size, job)
    if device.type == "cpu":
        keep_freed_memory()
    torch.manual_seed(config.seed)
    model = model_for(device).to(device, memory_format=torch.channels_last)
    train = TensorData(True, device)
    began = time.perf_counter()
    first = torch.arange(min(len(train), WHITEN_IMAGES), device=device)
    init_whitening(model, train.batch(first)[0])
    whiten_seconds = time.perf_counter() - began
    optimizer = make_optimizer(model)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=LABEL_SMOOTHING)
    history: list[dict[str, float]] = []
    start = 0
    restart_resume(config, arch_name(model), job, log)
    if config.resume:
        start, history = resume(config, model, optimizer, device, log)
    if config.init_from:
        init_from(config, model, log)
    use_ema = bool(DEFAULTS["cuda" if device.type == "cuda" else "cpu"]["ema"])
    if config.ema is not None:
        use_ema = config.ema
    ema = EMA(model) if main and use_ema else None  # only rank 0 evaluates and saves
    tested = model if ema is None else ema.model  # the weights evaluated and saved
    train_model = model if job is None else distributed.wrap(model, job)
    test = TensorData(False, device) if main else None
    share = len(train) if job is None else -(-len(train) // job.world_size)
    steps_per_epoch = -(-share // batch_size)
    total = steps_per_epoch * config.epochs
    step = start * steps_per_epoch
    ema_from = int(total * EMA_START)
    amp = uses_bf16(device)
    writer = SummaryWriter(config.logdir, purge_step=step or None) if main else None
    log(
        f"training {arch_name(model)} (widths {'/'.join(map(str, model.widths))}) on "
        f"{distributed.describe(job, device)}: {config.epochs} epochs, batch {config.batch_size}, "
        f"peak lr {config.lr}, {'bf16 autocast' if amp else 'fp32'}, whitening, alternating "
        f"flips, {'weight EMA' if use_ema else 'no weight EMA'}, flip+shift TTA"
    )
    flips = torch.rand(len(train), generator=torch.Generator().manual_seed(config.seed)) < 0.5
    flips = flips.to(device)
    try:
        for epoch in range(start, config.epochs):
            order = torch.Generator().manual_seed(config.seed * 1000 + epoch)
            mine = None
            if job is not None:
                mine = distributed.shard(len(train), config.seed * 1000, epoch, job)
            train_model.train()
            flip_now = alternating_flip(flips, epoch)
            began = time.perf_counter()
            total_loss = torch.zeros((), device=device)
            seen = 0
            for idx in train.batch_indices(batch_size, True, order, order=mine):
                images, targets = train.batch(idx, channels_last=True)
                images = torch.where(flip_now[idx].view(-1, 1, 1, 1), images.flip(3), images)
                images = translate(images, order)
                set_lr(optimizer, triangular_lr(step, total, config.lr, WARMUP), epoch)
                with torch.autocast(device.type, torch.bfloat16, enabled=amp):
                    loss = loss_fn(train_model(images), targets)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                step += 1
                if ema is not None:
                    ema.update(model, decay=0.0 if step <= ema_from else None)
                total_loss += loss.detach().float() * len(targets)
                seen += len(targets)
            synchronize(device)
            seconds = time.perf_counter() - began + (whiten_seconds if epoch == 0 else 0.0)
            train_loss = distributed.mean_over_processes((total_loss / seen).item(), job)
            if main:
                assert test is not None and writer is not None
                last = epoch + 1 == config.epochs
                accuracies = evaluate_tta(tested, test, tta=last)
                writer.add_scalar("train_loss", train_loss, step)
                for name, value in accuracies.items():
                    writer.add_scalar(_HISTORY_KEYS[name], value, epoch + 1)
                writer.flush()
                history.append(
                    {
                        "epoch": epoch + 1,
                        "train_loss": train_loss,
                        "seconds": seconds,
                        **{_HISTORY_KEYS[name]: value for name, value in accuracies.items()},
                    }
                )
                # With the EMA, the checkpoint holds the average, the weights that are evaluated;
                # resuming restarts the average from them.
                path = save_epoch(config, tested, optimizer, epoch + 1, history)
                log(
                    f"epoch {epoch + 1:2d}/{config.epochs}  train loss {train_loss:.4f}  "
                    f"test accuracy {accuracies['plain']:.2%}  ({seconds:.1f} s)  saved {path}"
                )
            distributed.barrier(job)
    finally:
        if writer is not None:
            writer.close()
    if not main:
        return history
    log(f"training time {sum(h['seconds'] for h in history):.1f} s")
    last = history[-1]
    if "test_accuracy_tta" in last:
        log(
            f"final test accuracy: {last['test_accuracy_tta']:.2%} (with flip-and-shift TTA; "
            f"{last['test_accuracy_flip']:.2%} with flip TTA, {last['test_accuracy']:.2%} without)"
        )
    else:
        log(f"final test accuracy: {last['test_accuracy']:.2%} (without TTA)")
    return history

