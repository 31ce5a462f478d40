"""The speed-run recipe behind ``cifar-course train --recipe speedrun`` (lesson 08).

Written for this course from the published descriptions of the fast CIFAR-10 runs (David Page's
ResNet-9 posts, 2018; Keller Jordan, "94% on CIFAR-10 in 3.29 seconds on a single GPU",
arXiv:2404.00498) and airbench94's published hyper-parameters. On top of lesson 06's recipe:

- a frozen **whitening** first layer: 2x2 filters computed from the training images' own patches,
  so that the filters' outputs are uncorrelated and of unit variance (``whitening_filters``);
- **BatchNorm without a learned scale** and with a faster-moving running average (momentum 0.4);
- **alternating flips**: each image is mirrored in every other epoch, instead of at random
  (``alternating_flip``);
- **identity initialization** of the 3x3 convolutions (``init_identity``);
- BatchNorm's biases learn **64 times faster** than the weights (``make_optimizer``);
- airbench94's **hyper-parameters**: Nesterov momentum 0.85, a peak learning rate of 11.5 per
  1024 images and a weight decay of 0.0153 per 1024 images, both divided by airbench's measure
  of momentum's effect, 1 + 1 / (1 - 0.85), and a schedule from 0.2 x the peak up to the peak
  and down to 0.07 x (``schedule``);
- **lookahead**: every 5 steps the weights are pulled back towards a slow moving average of
  themselves, more and more strongly towards the end of training (``Lookahead``);
- a short run: 9 epochs on a CPU, 10 on a GPU, against lesson 06's 12.

On a CUDA GPU three switches change how the same steps run (each measured in ``benchmarks/``;
fused or other kernels round differently, so the last bits can differ): ``COMPILE``
(``torch.compile`` for the training steps, with or without CUDA graphs), ``CUDNN_BENCHMARK``
(cuDNN times its convolution kernels once and keeps the fastest), both off unless set, because
one run, the CLI's, pays more for them than they save; and ``DEVICE_DATA_PATH`` (the whitening's
sums on the GPU, and each epoch's random shifts drawn at once and copied in one go).
``OPTIMIZER = "muon"`` swaps the recipe's optimizer for Muon on the convolution filters
(``Muon``): then the run's lr is the filters' rate, and airbench94_muon's epochs, batch and rate
are in ``MUON_DEFAULTS``. ``CHANNELS_LAST`` switches the memory layout (on any device).

``--no-lookahead`` switches the lookahead off. An exponential moving average of the weights
(``EMA``) is there too, off unless ``--ema``: lesson 08 measures what each does.

On a CUDA GPU it trains ``SpeedNet`` at airbench94's widths (64/256/256), at batch 1024; on a CPU,
where every multiply-add costs real time, the narrower ``SpeedNetSmall`` at batch 512. Both use
bf16 autocast where it pays: on GPUs with native bf16, and on CPUs where a short probe finds it
faster (``uses_bf16``); elsewhere fp32. ``--precision fp32`` or ``--precision bf16`` decides
instead (``choose_bf16``; ``check_precision`` refuses bf16 where it cannot run). A resumed run
keeps the precision its checkpoint was trained in. ``--epochs``, ``--batch-size`` and ``--lr``
keep their meaning; the defaults are in ``DEFAULTS``.
"""

from __future__ import annotations

import copy
import functools
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils.tensorboard import SummaryWriter

from . import distributed
from .checkpoints import load_checkpoint
from .data import TensorData
from .device import cpu_bf16_supported, cuda_bf16_native, synchronize
from .distributed import Distributed
from .errors import CourseError
from .models import SpeedNet, SpeedNetSmall, arch_name
from .modern import (
    draw_shifts,
    end_epoch,
    log_final,
    start_process,
    steps_per_epoch,
    translate,
    triangular_lr,
)
from .training import (
    TrainConfig,
    init_from,
    refuse_to_overwrite,
    restart_resume,
    resume,
    run_recipe,
    stop_if_diverged,
)

WHITEN_KERNEL = SpeedNet.whiten_kernel
WHITEN_EPS = 5e-4  # added to each eigenvalue: keeps near-constant patch directions from exploding
LABEL_SMOOTHING = 0.2
EMA_DECAY = 0.99  # per step; the average covers about the last 100 steps
EMA_START = 0.5  # start averaging halfway through training
WHITEN_IMAGES = 5000  # the whitening filters come from the patches of this many training images
WHITEN_BIAS_EPOCHS = 3  # the whitening layer's bias learns for this many epochs, then freezes
WARMUP = 0.23  # share of the steps over which the learning rate rises
LR_START, LR_END = 0.2, 0.07  # the learning rate at the first and the last step, times the peak
MOMENTUM = 0.85
# The weight decay term per training image, at the peak learning rate: airbench94's 0.0153 per
# 1024 images, divided by airbench's measure of momentum's effect, 1 + 1 / (1 - momentum).
# It is "decoupled": changing --lr does not change it (see ``make_optimizer``).
WEIGHT_DECAY = 0.0153 / 1024 / (1 + 1 / (1 - MOMENTUM))
BIAS_LR_SCALE = 64.0  # BatchNorm's biases learn this many times faster than the weights
LOOKAHEAD_EVERY = 5  # steps between two lookahead updates
LOOKAHEAD_DECAY = 0.95**LOOKAHEAD_EVERY  # the share of the slow weights an update keeps, at the end

# How the recipe runs on a CUDA GPU: the same steps, in other kernels (whose last bits can
# differ). On a CPU, COMPILE and CUDNN_BENCHMARK are ignored, and DEVICE_DATA_PATH draws the very
# same shifts as batch by batch. Measured on an NVIDIA H200 (benchmarks/2026-12-04-h200/): with
# both of the first two, a warm 10-epoch run trained in 1.92 s against 3.13 s without, but the
# first run of a process took 21.7 s for its first epoch, compilation included, and cuDNN's
# timing alone made a first run 0.7 s slower: one run (the CLI's) is faster without them.
# tools/speedrun_bench.py sets them with --set, for warm runs.
COMPILES = ("off", "default", "reduce-overhead")  # eager; torch.compile; the same + CUDA graphs
COMPILE = "off"
CUDNN_BENCHMARK = False  # cuDNN times its convolution kernels on the first steps, keeps the fastest
DEVICE_DATA_PATH = True  # the whitening's sums on the GPU; each epoch's shifts copied in one go
CHANNELS_LAST = True  # images and activations as [N, H, W, C] in memory, as the kernels prefer
OPTIMIZERS = ("sgd", "muon")  # airbench94's settings (above); airbench94_muon's (below)
OPTIMIZER = "sgd"

# Muon (``OPTIMIZER = "muon"``), from airbench94_muon's published settings. The run's lr is the
# filters' learning rate (``MUON_DEFAULTS``); the other rates are per image of the batch, because
# airbench sums the loss over a batch where this recipe takes its mean.
MUON_MOMENTUM = 0.6  # Nesterov momentum of the filters' updates
MUON_NS_STEPS = 3  # Newton-Schulz iterations that orthogonalize each update
MUON_BIAS_LR = 0.053  # BatchNorm's biases and the whitening bias, per image
# The linear head, per image. airbench's head divides its output by 256 where SpeedNet's divides
# by 9 and starts about 28 times smaller: the same change of the outputs takes (9/256)**2 the rate.
MUON_HEAD_LR = 0.67 * (9 / 256) ** 2
MUON_WEIGHT_DECAY = 2e-6  # per image of the batch, on all but the filters
MUON_DEFAULTS: dict[str, float | int] = {"epochs": 8, "batch_size": 2000, "lr": 0.24}


def init_identity(model: SpeedNet) -> None:
    """Start each 3x3 convolution after the whitening layer as (partly) the identity.

    The first ``c_in`` of its ``c_out`` filters are set to pass one input channel each through
    unchanged (``nn.init.dirac_``); the other filters keep their random start. A freshly built
    network then hands its input on almost as it came, like a network with skip connections,
    and the first steps of training do not have to find their way through random filters.
    """
    for module in model.layers.modules():
        if isinstance(module, nn.Conv2d):
            weight = module.weight.data
            nn.init.dirac_(weight[: weight.shape[1]])


def orthogonalize(update: torch.Tensor, steps: int = MUON_NS_STEPS) -> torch.Tensor:
    """Roughly the nearest (semi-)orthogonal matrix to ``update`` ``[rows, cols]``: its singular
    values pushed towards 1 by ``steps`` Newton-Schulz iterations of the quintic
    ``x -> a x + b (x x^T) x + c (x x^T)^2 x``, in bf16. Keller Jordan's coefficients trade
    exactness for speed: the singular values end up roughly between 0.7 and 1.2."""
    a, b, c = 3.4445, -4.7750, 2.0315
    x = update.bfloat16()
    x = x / (x.norm() + 1e-7)
    tall = x.shape[0] > x.shape[1]
    if tall:
        x = x.T
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return (x.T if tall else x).to(update.dtype)


class Muon(torch.optim.Optimizer):
    """Nesterov SGD whose groups marked ``orthogonal`` take orthogonalized steps: "Muon" (Keller
    Jordan, 2024), as airbench94_muon uses it for the convolution filters.

    In such a group, each filter tensor ``[c_out, c_in, k, k]`` is first scaled back to a norm
    of ``sqrt(c_out)``, then moved by ``lr`` times ``orthogonalize`` of its momentum-averaged
    gradient seen as a ``[c_out, c_in*k*k]`` matrix: every direction of the update gets the same
    size, however unevenly the gradient spreads over them. The other groups take Nesterov SGD
    steps with weight decay, as ``torch.optim.SGD`` does. Each group has its own momentum.
    """

    def __init__(self, groups: list[dict[str, Any]]) -> None:
        defaults = {"lr": 0.0, "momentum": 0.0, "weight_decay": 0.0, "orthogonal": False}
        super().__init__(groups, defaults)

    @torch.no_grad()
    def step(self, closure: None = None) -> None:  # type: ignore[override]
        for group in self.param_groups:
            lr, momentum = group["lr"], group["momentum"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                if group["weight_decay"]:
                    grad = grad.add(p, alpha=group["weight_decay"])
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(grad)
                buffer = state["momentum_buffer"]
                buffer.mul_(momentum).add_(grad)
                grad = grad.add(buffer, alpha=momentum)  # Nesterov
                if group["orthogonal"]:
                    p.mul_(len(p) ** 0.5 / p.norm())
                    grad = orthogonalize(grad.reshape(len(grad), -1)).view_as(p)
                p.add_(grad, alpha=-lr)


def make_muon(model: SpeedNet, lr: float, batch_size: int) -> Muon:
    """``Muon`` in four groups with airbench94_muon's settings: the convolution filters at ``lr``,
    orthogonalized, momentum 0.6; BatchNorm's biases, the linear head and (last, for
    ``set_muon_lr``) the whitening bias by Nesterov SGD, momentum 0.85, at rates per image of the
    batch and with weight decay. ``lr_scale`` holds each group's rate over ``lr``."""
    trained = [p for p in model.layers.parameters() if p.requires_grad]
    shrink = MUON_WEIGHT_DECAY * batch_size
    bias_lr, head_lr = MUON_BIAS_LR * batch_size, MUON_HEAD_LR * batch_size

    def sgd(params: list[torch.Tensor], rate: float) -> dict[str, Any]:
        return {
            "params": params,
            "lr_scale": rate / lr,
            "momentum": MOMENTUM,
            "weight_decay": shrink / rate,
        }

    return Muon(
        [
            {
                "params": [p for p in trained if p.ndim == 4],
                "lr_scale": 1.0,
                "momentum": MUON_MOMENTUM,
                "orthogonal": True,
            },
            sgd([p for p in trained if p.ndim == 1], bias_lr),
            sgd([p for p in trained if p.ndim == 2], head_lr),
            sgd([model.whiten.bias], bias_lr),
        ]
    )


def set_muon_lr(optimizer: Muon, step: int, total: int, lr: float, per_epoch: int) -> None:
    """airbench94_muon's schedule: every rate straight down from its peak to 0 over the run, the
    whitening bias's over its first ``WHITEN_BIAS_EPOCHS`` epochs."""
    *groups, whiten_bias = optimizer.param_groups
    for group in groups:
        group["lr"] = lr * group["lr_scale"] * (1 - step / total)
    left = max(0.0, 1 - step / (WHITEN_BIAS_EPOCHS * per_epoch))
    whiten_bias["lr"] = lr * whiten_bias["lr_scale"] * left


def make_optimizer(
    model: SpeedNet,
    lr: float,
    batch_size: int,
    momentum: float = MOMENTUM,
    weight_decay: float = WEIGHT_DECAY,
    bias_lr_scale: float = BIAS_LR_SCALE,
) -> torch.optim.SGD:
    """Nesterov SGD in three groups: the weights; BatchNorm's parameters, at ``bias_lr_scale``
    times the learning rate; and the whitening layer's bias (see ``set_lr``).

    ``lr`` is the peak learning rate. At the peak, the weight decay term of each step is
    ``weight_decay * batch_size`` times the weights and BatchNorm's biases (before momentum
    adds up the steps), whatever ``lr`` and the groups' scales are: SGD multiplies its
    ``weight_decay`` by each group's learning rate, so each group gets that amount divided by
    its own peak rate. Frozen parameters are left out.
    """
    shrink = weight_decay * batch_size
    weights, norms = [], []
    for name, p in model.named_parameters():
        if p.requires_grad and name != "whiten.bias":
            (weights if p.ndim > 1 else norms).append(p)
    return torch.optim.SGD(
        [
            {"params": weights, "weight_decay": shrink / lr, "lr_scale": 1.0},
            {
                "params": norms,
                "weight_decay": shrink / (lr * bias_lr_scale),
                "lr_scale": bias_lr_scale,
            },
            {"params": [model.whiten.bias], "weight_decay": 0.0, "lr_scale": 1.0},
        ],
        lr=0.0,
        momentum=momentum,
        nesterov=True,
    )


def set_lr(optimizer: torch.optim.SGD, lr: float, epoch: int) -> None:
    """Set every group's learning rate to ``lr`` times its ``lr_scale``; the whitening bias's is
    0 from ``WHITEN_BIAS_EPOCHS`` on.

    (A learning rate of 0 freezes it: unlike ``requires_grad_(False)`` mid-run, that works
    unchanged under DistributedDataParallel.)
    """
    *groups, whiten_bias = optimizer.param_groups
    for group in groups:
        group["lr"] = lr * group["lr_scale"]
    whiten_bias["lr"] = lr if epoch < WHITEN_BIAS_EPOCHS else 0.0


def _keep_decoupled(
    optimizer: torch.optim.Optimizer, fresh: torch.optim.Optimizer, config: TrainConfig
) -> None:
    """After ``--resume``: the loaded optimizer keeps its momentum buffers but takes this run's
    settings, so that the weight decay stays decoupled from a changed ``--lr`` or batch size."""
    if any("lr_scale" not in group for group in optimizer.param_groups):
        raise CourseError(
            f"'{config.resume}' was saved by the speedrun recipe of before 2026-11-28, whose "
            f"optimizer settings differ; start a new run from its weights with --init-from "
            f"'{config.resume}' instead of --resume."
        )
    for group, new in zip(optimizer.param_groups, fresh.param_groups, strict=True):
        group.update({key: new[key] for key in ("weight_decay", "momentum", "lr_scale")})


def schedule(step: int, total: int, peak: float) -> float:
    """The recipe's learning rate at ``step`` of ``total``: from 0.2 x ``peak`` up to ``peak``
    over the first 23% of the steps, then down to 0.07 x ``peak`` (``triangular_lr``)."""
    return triangular_lr(step, total, peak, WARMUP, LR_START, LR_END)


def patches(images: torch.Tensor, kernel: int = WHITEN_KERNEL) -> torch.Tensor:
    """Every ``kernel`` x ``kernel`` patch of ``images`` ``[N,3,H,W]``, as rows ``[M, 3*k*k]``."""
    cols = nn.functional.unfold(images, kernel)  # [N, 3*k*k, positions]
    return cols.transpose(1, 2).reshape(-1, cols.shape[1])


def patch_statistics(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean ``[3*k*k]`` and covariance ``[3*k*k, 3*k*k]`` of every patch of ``images``, in
    float64 (the sums run over millions of patches)."""
    rows = patches(images.float()).double()
    mean = rows.mean(0)
    rows -= mean
    return mean, rows.T @ rows / (len(rows) - 1)


def filters_from_covariance(covariance: torch.Tensor, eps: float = WHITEN_EPS) -> torch.Tensor:
    """``whitening_filters`` from the patches' covariance, largest eigenvalue first."""
    eigenvalues, eigenvectors = torch.linalg.eigh(covariance)
    filters = eigenvectors.T / torch.sqrt(eigenvalues + eps)[:, None]
    k = WHITEN_KERNEL
    return filters.flip(0).float().reshape(-1, 3, k, k)


def whitening_filters(images: torch.Tensor, eps: float = WHITEN_EPS) -> torch.Tensor:
    """Filters ``[3*k*k, 3, k, k]`` whose outputs on the patches of ``images`` are white.

    With the patches' covariance ``C = V diag(lambda) V^T``, filter ``i`` is eigenvector ``v_i``
    divided by ``sqrt(lambda_i + eps)``: its output on a patch has variance
    ``lambda_i / (lambda_i + eps)``, nearly 1, and outputs of different filters are uncorrelated.
    The first layer then hands the next one every direction of colour and edge at the same scale,
    instead of mostly overall brightness, the direction in which natural image patches vary most.
    """
    return filters_from_covariance(patch_statistics(images)[1], eps)


@torch.no_grad()
def init_whitening(model: SpeedNet, images: torch.Tensor) -> None:
    """Set ``model.whiten`` from ``images`` in [0, 1] (normalized as the model does).

    Computed in float64. The patches' sums run on a CUDA GPU where the images are, with
    ``DEVICE_DATA_PATH`` (no copy of the images to the host), else on the CPU (Apple's MPS has no
    float64); the 12x12 eigendecomposition always runs on the CPU, so that every device gets
    LAPACK's eigenvectors, signs included. The filters are then copied to the model's device.
    """
    if not (DEVICE_DATA_PATH and images.device.type == "cuda"):
        images = images.cpu()
    normalized = (images - model.mean.to(images.device)) / model.std.to(images.device)
    mean_patch, covariance = (t.cpu() for t in patch_statistics(normalized))
    filters = filters_from_covariance(covariance)
    # Centre each output: a patch at the data's mean gives 0 before the GELU.
    centre = -(filters.reshape(len(filters), -1).double() @ mean_patch).float()
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


def lookahead_decay(step: int, total: int) -> float:
    """The share of the slow weights that the lookahead update after ``step`` of ``total`` keeps:
    ``LOOKAHEAD_DECAY * (step / total) ** 3``. Below 0.1 for the first half of the run (the
    update then nearly copies the live weights), it reaches ``LOOKAHEAD_DECAY`` (0.77) at the
    last step."""
    return LOOKAHEAD_DECAY * (step / total) ** 3


class Lookahead:
    """Slow weights that the live ones are pulled back to every few steps ("lookahead", Zhang et
    al., 2019, with airbench94's schedule for the decay; airbench94 ends its run on the slow
    weights as they were, where this recipe's last update uses the schedule's decay too).

    ``update`` first moves the slow weights towards the live ones,
    ``slow = decay * slow + (1 - decay) * live``, then sets the live weights to the slow ones:
    training goes on from the average of where the last steps went, which smooths out the noise
    of single steps. BatchNorm's running statistics are treated the same way; integer buffers
    are left alone. Unlike ``EMA``, it changes the weights that train, so under torchrun every
    process runs it (the weights stay the same on all of them). Each checkpoint keeps the slow
    weights (under ``"lookahead"``), so that ``--resume`` goes on exactly where the run stopped
    (unless ``--ema``, whose checkpoints hold the average instead of the weights that train).
    """

    def __init__(self, model: nn.Module) -> None:
        self.slow = {
            name: value.detach().clone()
            for name, value in model.state_dict().items()
            if value.is_floating_point()
        }

    @torch.no_grad()
    def update(self, model: nn.Module, decay: float) -> None:
        if not 0 <= decay <= 1:
            raise ValueError(f"the lookahead's decay must be in [0, 1], got {decay}")
        live = model.state_dict()
        slow, current = list(self.slow.values()), [live[name] for name in self.slow]
        # the same lerp and copy per tensor, in two launches on a GPU instead of two per tensor
        torch._foreach_lerp_(slow, current, 1 - decay)
        torch._foreach_copy_(current, slow)

    def resume(self, checkpoint: dict[str, Any], log: Callable[[str], None]) -> None:
        """Take the slow weights saved in a training ``checkpoint``. A checkpoint without them
        (of a run with ``--no-lookahead``, or written before they were saved) leaves the slow
        weights starting from its weights."""
        saved = checkpoint.get("lookahead")
        if saved is None:
            log("the checkpoint holds no lookahead weights: they start from its weights")
            return
        for name, slow in self.slow.items():
            slow.copy_(saved[name])


DEFAULTS: dict[str, dict[str, float | int]] = {
    # epochs, global batch, peak learning rate for SGD on the mean loss of a batch: airbench94's
    # 11.5 per 1024 images, divided by 1 + 1 / (1 - momentum) like the weight decay
    "cuda": {"epochs": 10, "batch_size": 1024, "lr": 1.5},
    "cpu": {"epochs": 9, "batch_size": 512, "lr": 0.75},
}


BF16_MIN_SPEEDUP = 1.15  # on a CPU, bf16 must make training steps this many times faster


def uses_bf16(device: torch.device, batch_size: int = 512, job: Distributed | None = None) -> bool:
    """Whether to train in bf16 autocast on ``device`` at ``batch_size`` (per process).

    On a CUDA GPU: where it has native bf16 (Ampere, compute capability 8, or newer); older GPUs
    (Colab's T4) would emulate it, slowly. On a CPU: where a short probe (``cpu_bf16_speedup``)
    finds bf16 steps at least ``BF16_MIN_SPEEDUP`` times as fast as fp32 ones. That depends on
    the processor: on an Intel Xeon with AMX, bf16 steps of ``SpeedNetSmall`` were 1.7 times as
    fast; on one with AVX-512 BF16 but no AMX, slower (lesson 04); an AMD EPYC without native
    bf16 would emulate it (``benchmarks/README.md``). Under torchrun the processes decide
    together, on their mean speed-up. Elsewhere (Apple's MPS) fp32.
    """
    if device.type == "cuda":
        return cuda_bf16_native(device)
    return device.type == "cpu" and cpu_speedup(batch_size, job) >= BF16_MIN_SPEEDUP


def cpu_speedup(batch_size: int, job: Distributed | None = None) -> float:
    """``cpu_bf16_speedup`` (0 where oneDNN has no bf16), averaged over torchrun's processes, so
    that they all decide alike: every process calls it once."""
    speedup = cpu_bf16_speedup(batch_size) if cpu_bf16_supported() else 0.0
    return distributed.mean_over_processes(speedup, job)


@functools.cache
def cpu_bf16_speedup(batch_size: int, steps: int = 3) -> float:
    """fp32's time for a training step of the CPU network at ``batch_size`` divided by bf16
    autocast's: above 1 where bf16 is faster.

    One warm-up step of each, then ``steps`` steps of each, fp32 and bf16 in turn, on two
    throwaway ``SpeedNetSmall`` and random images; each precision's fastest step counts, so that
    a moment when the machine runs slow cannot decide (with the two precisions timed one after
    the other and the total of two steps each, one probe on a 2-core Intel Xeon with AMX found
    1.09 where five others found 1.65-2.09). The global random state is left alone. About 5 s at
    batch 512; measured once per batch size in each process.
    """
    with torch.random.fork_rng(devices=[]):
        generator = torch.Generator().manual_seed(0)
        images = torch.rand(batch_size, 3, 32, 32, generator=generator)
        images = images.contiguous(memory_format=torch.channels_last)
        targets = torch.randint(0, 10, (batch_size,), generator=generator)
        models = [SpeedNetSmall().to(memory_format=torch.channels_last) for _ in range(2)]
        optimizers = [
            torch.optim.SGD(
                [p for p in model.parameters() if p.requires_grad],
                lr=0.01,
                momentum=MOMENTUM,
                nesterov=True,
            )
            for model in models
        ]
        fastest = [float("inf"), float("inf")]
        for i in range(1 + steps):
            for bf16 in (0, 1):
                began = time.perf_counter()
                with torch.autocast("cpu", torch.bfloat16, enabled=bool(bf16)):
                    loss = nn.functional.cross_entropy(models[bf16](images), targets)
                optimizers[bf16].zero_grad(set_to_none=True)
                loss.backward()
                optimizers[bf16].step()
                if i > 0:  # the first step of each is a warm-up
                    fastest[bf16] = min(fastest[bf16], time.perf_counter() - began)
    return fastest[0] / fastest[1]


def bf16_refusal(device: torch.device) -> str | None:
    """Why ``--precision bf16`` cannot be followed on ``device``, or None where it can: a CPU
    whose oneDNN has no bf16, a CUDA GPU older than Ampere (compute capability 8), whose bf16
    convolutions would run on slow fallback kernels (the rule of ``uses_bf16``), or another
    device."""
    if device.type == "cpu":
        return None if cpu_bf16_supported() else "PyTorch's oneDNN has no bf16 on this CPU"
    if device.type == "cuda":
        if cuda_bf16_native(device):
            return None
        major, minor = torch.cuda.get_device_capability(device)
        name = torch.cuda.get_device_name(device)
        return f"{name} (compute capability {major}.{minor}) has no native bf16"
    return f"bf16 runs here on a CPU or a CUDA GPU only, not on {device.type}"


def resumed_bf16(device: torch.device, saved_bf16: bool) -> bool:
    """Whether a resumed run trains in bf16: as its checkpoint was trained, except in fp32 on a
    CPU whose oneDNN has no bf16."""
    return saved_bf16 and (device.type != "cpu" or cpu_bf16_supported())


def check_precision(device: torch.device, saved: dict[str, Any] | None, precision: str) -> None:
    """Refuse ``--precision`` where it cannot be followed: bf16 where ``bf16_refusal`` says so,
    or, for a resumed run (``saved``), a precision other than the one it goes on in. Called
    before anything is written."""
    if precision == "auto":
        return
    if saved is not None and "bf16" in saved:
        goes_on = resumed_bf16(device, bool(saved["bf16"]))
        if (precision == "bf16") != goes_on:
            why = (
                ""
                if goes_on or not saved["bf16"]
                else " (it trained in bf16, which this CPU cannot run)"
            )
            raise CourseError(
                f"--precision {precision}: the run being resumed goes on in "
                f"{'bf16' if goes_on else 'fp32'}{why}. Leave out --precision, or start a new run "
                "with --init-from."
            )
        return
    refusal = bf16_refusal(device) if precision == "bf16" else None
    if refusal is not None:
        raise CourseError(f"--precision bf16: {refusal}. Use --precision fp32, or auto.")


def choose_bf16(
    device: torch.device,
    batch_size: int,
    job: Distributed | None,
    saved: dict[str, Any] | None,
    precision: str = "auto",
) -> tuple[bool, str]:
    """(train in bf16?, the log's words for it), once ``check_precision`` has passed. A resumed
    run keeps the precision its checkpoint was trained in, so that it goes on as if it had never
    stopped. Otherwise ``precision`` (``--precision``) decides: "fp32", "bf16", or "auto", where
    ``uses_bf16`` does (on a CPU, a probe)."""
    if saved is not None and "bf16" in saved:
        amp = resumed_bf16(device, bool(saved["bf16"]))
        if amp != bool(saved["bf16"]):
            return False, "fp32 (the resumed run trained in bf16, which this CPU cannot run)"
        return amp, f"{'bf16 autocast' if amp else 'fp32'}, as the run it resumes"
    if precision != "auto":
        return (
            precision == "bf16",
            f"{'bf16 autocast' if precision == 'bf16' else 'fp32'} (--precision {precision})",
        )
    if device.type != "cpu":
        amp = uses_bf16(device, batch_size, job)
        return amp, "bf16 autocast" if amp else "fp32"
    speedup = cpu_speedup(batch_size, job)
    amp = speedup >= BF16_MIN_SPEEDUP
    if not cpu_bf16_supported():
        return amp, "fp32 (this CPU has no bf16)"
    probe = "mean over the processes " if job is not None and job.world_size > 1 else ""
    return amp, f"{'bf16 autocast' if amp else 'fp32'} (bf16 probe, {probe}{speedup:.2f}x fp32)"


def check_switches() -> None:
    """Refuse a value of ``COMPILE`` or ``OPTIMIZER`` that the recipe does not know, in one line,
    before anything runs (a misspelt one would otherwise be taken for the default, or fail deep
    inside ``torch.compile``)."""
    for name, value, known in (
        ("COMPILE", COMPILE, COMPILES),
        ("OPTIMIZER", OPTIMIZER, OPTIMIZERS),
    ):
        if value not in known:
            choices = ", ".join(repr(k) for k in known)
            raise CourseError(f"speedrun.{name} = {value!r}: it must be one of {choices}.")


def check_optimizer(saved: dict[str, Any], config: TrainConfig) -> None:
    """Refuse to resume a checkpoint written with the other optimizer (its state would not fit),
    in one line. Checkpoints from before the switch existed were written by SGD."""
    groups = saved["optimizer"]["param_groups"] if saved.get("optimizer") else []
    wrote = "muon" if any("orthogonal" in group for group in groups) else "sgd"
    if wrote != OPTIMIZER:
        raise CourseError(
            f"'{config.resume}' was trained with speedrun.OPTIMIZER = {wrote!r}, and this run "
            f"uses {OPTIMIZER!r}: resume it with {wrote!r}, or start a new run from its weights "
            f"with --init-from."
        )


def model_for(device: torch.device) -> SpeedNet:
    """``SpeedNet`` on a CUDA GPU, ``SpeedNetSmall`` elsewhere."""
    return SpeedNet() if device.type == "cuda" else SpeedNetSmall()


def fit_speedrun(config: TrainConfig, log: Callable[[str], None] = print) -> list[dict[str, float]]:
    """Train the speed-run network, checkpointing each epoch the weights it tests (the last
    weights, or their average with ``config.ema``); return the history. Under torchrun it trains
    with DistributedDataParallel, like the other recipes."""
    return run_recipe(_fit_speedrun, config, log)


def _fit_speedrun(
    config: TrainConfig, job: Distributed | None, log: Callable[[str], None]
) -> list[dict[str, float]]:
    check_switches()
    main, device, batch_size = start_process(config, job)
    layout = torch.channels_last if CHANNELS_LAST else torch.contiguous_format
    model = model_for(device).to(device, memory_format=layout)
    train = TensorData(True, device)
    synchronize(device)  # the data's copy to the device is not training time
    began = time.perf_counter()
    first = torch.arange(min(len(train), WHITEN_IMAGES), device=device)
    init_whitening(model, train.batch(first)[0])
    synchronize(device)
    whiten_seconds = time.perf_counter() - began
    init_identity(model)
    muon = OPTIMIZER == "muon"
    build = make_muon if muon else make_optimizer
    optimizer = build(model, config.lr, config.batch_size)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=LABEL_SMOOTHING)
    history: list[dict[str, float]] = []
    start = 0
    restart_resume(config, arch_name(model), job, log)
    saved = load_checkpoint(config.resume, map_location=device) if config.resume else None
    if saved is not None:
        check_optimizer(saved, config)
        start, history = resume(config, model, optimizer, device, log, saved)
        _keep_decoupled(optimizer, build(model, config.lr, config.batch_size), config)
    check_precision(device, saved, config.precision)
    if config.init_from:
        init_from(config, model, log)
    refuse_to_overwrite(config, arch_name(model), start, job)
    began = time.perf_counter()
    # on a CPU, without --precision, a probe of a few seconds
    amp, precision = choose_bf16(device, batch_size, job, saved, config.precision)
    setup_seconds = whiten_seconds + time.perf_counter() - began  # training time of epoch 1
    ema = EMA(model) if main and config.ema else None  # only rank 0 evaluates and saves
    tested = model if ema is None else ema.model  # the weights evaluated and saved
    train_model = model if job is None else distributed.wrap(model, job)
    compiled = job is None and device.type == "cuda" and COMPILE != "off"
    if compiled:  # tests and checkpoints use the plain model, which shares the weights
        mode = None if COMPILE == "default" else COMPILE
        train_model = torch.compile(model, mode=mode, dynamic=False)
    # After wrap, which gives every process rank 0's weights. Each checkpoint holds the slow
    # weights too, so that a resumed run goes on exactly as if it had never stopped (without
    # --ema: then the checkpoint holds the average, not the weights that trained).
    lookahead = Lookahead(model) if config.lookahead else None
    if lookahead is not None and saved is not None:
        lookahead.resume(saved, log)
    test = TensorData(False, device) if main else None
    per_epoch = steps_per_epoch(len(train), batch_size, job)
    total = per_epoch * config.epochs
    step = start * per_epoch
    ema_from = int(total * EMA_START)
    writer = SummaryWriter(config.logdir, purge_step=step or None) if main else None
    log(
        f"training {arch_name(model)} (widths {'/'.join(map(str, model.widths))}) on "
        f"{distributed.describe(job, device)}: {config.epochs} epoch{'s' * (config.epochs != 1)}, "
        f"batch {config.batch_size}, "
        f"peak lr {config.lr}, {precision}, whitening, alternating "
        f"flips, {'lookahead' if config.lookahead else 'no lookahead'}, "
        f"{'weight EMA' if config.ema else 'no weight EMA'}, flip+shift TTA"
        + (", Muon" if muon else "")
        + (f", torch.compile ({COMPILE})" if compiled else "")
    )
    flips = torch.rand(len(train), generator=torch.Generator().manual_seed(config.seed)) < 0.5
    flips = flips.to(device)
    cudnn_benchmark = torch.backends.cudnn.benchmark
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = CUDNN_BENCHMARK
    try:
        for epoch in range(start, config.epochs):
            order = torch.Generator().manual_seed(config.seed * 1000 + epoch)
            mine = None
            if job is not None:
                mine = distributed.shard(len(train), config.seed * 1000, epoch, job)
            train_model.train()
            if job is None and epoch >= WHITEN_BIAS_EPOCHS and not compiled:
                # Frozen for good: autograd then skips the backward pass into the whitening
                # layer (4-14 % of a CPU step in benchmarks/2026-11-28-cpu-lookahead/probes.log).
                # DDP fixes its gradient buckets at the wrap, and a compiled model would compile
                # again, so there the learning rate 0 of set_lr freezes it instead.
                model.whiten.bias.requires_grad_(False)
            flip_now = alternating_flip(flips, epoch)
            synchronize(device)  # the last epoch's test and checkpoint are not training time
            began = time.perf_counter()
            total_loss = torch.zeros((), device=device)
            seen = 0
            batches = list(train.batch_indices(batch_size, True, order, order=mine))
            shifts = None
            if DEVICE_DATA_PATH:  # after the shuffle, the same numbers as translate would draw
                shifts = draw_shifts(sum(len(idx) for idx in batches), order, device)
            for idx in batches:
                images, targets = train.batch(idx, channels_last=CHANNELS_LAST)
                images = torch.where(flip_now[idx].view(-1, 1, 1, 1), images.flip(3), images)
                drawn = None if shifts is None else shifts[seen : seen + len(idx)]
                images = translate(images, order, drawn)
                if muon:
                    set_muon_lr(optimizer, step, total, config.lr, per_epoch)
                else:
                    set_lr(optimizer, schedule(step, total, config.lr), epoch)
                if COMPILE == "reduce-overhead" and compiled:
                    torch.compiler.cudagraph_mark_step_begin()  # the last step's outputs are used
                with torch.autocast(device.type, torch.bfloat16, enabled=amp):
                    loss = loss_fn(train_model(images), targets)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                step += 1
                if lookahead is not None and (step % LOOKAHEAD_EVERY == 0 or step == total):
                    lookahead.update(model, lookahead_decay(step, total))
                if ema is not None:
                    ema.update(model, decay=0.0 if step <= ema_from else None)
                total_loss += loss.detach().float() * len(targets)
                seen += len(targets)
            synchronize(device)
            seconds = time.perf_counter() - began + (setup_seconds if epoch == 0 else 0.0)
            train_loss = distributed.mean_over_processes((total_loss / seen).item(), job)
            stop_if_diverged(train_loss, epoch + 1)  # on every process: they hold the same loss
            if main:
                assert test is not None and writer is not None
                # With the EMA, the checkpoint holds the average, the weights that are evaluated;
                # resuming restarts the average from them.
                end_epoch(
                    config,
                    tested,
                    optimizer,
                    test,
                    writer,
                    history,
                    log,
                    epoch=epoch + 1,
                    step=step,
                    train_loss=train_loss,
                    seconds=seconds,
                    extra={"bf16": amp}
                    | ({} if lookahead is None else {"lookahead": lookahead.slow}),
                )
            distributed.barrier(job)
    finally:
        torch.backends.cudnn.benchmark = cudnn_benchmark
        if writer is not None:
            writer.close()
    if main:
        log_final(history, log)
    return history
