"""The speed-run recipe behind ``cifar-course train --recipe speedrun`` (lesson 08).

Written for this course from the published descriptions of the fast CIFAR-10 runs (David Page's
ResNet-9 posts, 2018; Keller Jordan, "94% on CIFAR-10 in 3.29 seconds on a single GPU",
arXiv:2404.00498) and airbench94's published hyper-parameters. On top of lesson 06's recipe:

- a frozen **whitening** first layer: 2x2 filters computed from the training images' own patches,
  so that the filters' outputs are uncorrelated and of unit variance (``whitening_filters``);
- **BatchNorm without a learned scale** and with a faster-moving running average (momentum 0.4);
- **alternating flips**: each image is mirrored in every other epoch, instead of at random
  (``augment.alternating_flip``);
- **identity initialization** of the 3x3 convolutions (``init_identity``);
- BatchNorm's biases learn **64 times faster** than the weights (``make_optimizer``);
- airbench94's **hyper-parameters**: Nesterov momentum 0.85, a peak learning rate of 11.5 per
  1024 images and a weight decay of 0.0153 per 1024 images, both divided by airbench's measure
  of momentum's effect, 1 + 1 / (1 - 0.85), and a schedule from 0.2 x the peak up to the peak
  and down to 0.07 x (``schedule``);
- **lookahead**: every 5 steps the weights are pulled back towards a slow moving average of
  themselves, more and more strongly towards the end of training (``Lookahead``);
- a short run: 9 epochs on a CPU, 10 on a GPU, against lesson 06's 12.

On a CUDA GPU it trains ``SpeedNet`` at airbench94's widths (64/256/256), at batch 1024; on a CPU,
where every multiply-add costs real time, the narrower ``SpeedNetSmall`` at batch 512
(``SpeedrunHyper``). Both use bf16 autocast where it pays (``cifar_course.precision``).
``--no-lookahead`` switches the lookahead off; an exponential moving average of the weights
(``EMA``) is there too, off unless ``--ema``: lesson 08 measures what each does.

Settings without a flag, for Python and ``tools/speedrun_bench.py`` (each measured in
``benchmarks/``): ``optimizer="muon"`` swaps the optimizer for Muon on the convolution filters
(``Muon``), with airbench94_muon's epochs, batch and rate; and four switches that change how the
same steps run on a CUDA GPU (fused or other kernels round differently, so the last bits can
differ): ``compile`` (``torch.compile`` for the training steps, with or without CUDA graphs) and
``cudnn_benchmark`` (cuDNN times its convolution kernels once and keeps the fastest), both off,
because one run, the CLI's, pays more for them than they save; ``device_data_path`` (the
whitening's sums on the GPU, and each epoch's random shifts drawn at once and copied in one go)
and ``channels_last`` (the memory layout, on any device), both on.
"""

from __future__ import annotations

import copy
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import torch
from torch import nn
from torch.utils.tensorboard import SummaryWriter

from .. import distributed
from ..augment import alternating_flip, draw_shifts, translate, triangular_lr
from ..budget import MAX_EPOCHS as MAX_BUDGET_EPOCHS
from ..budget import MIN_BUDGET, NETWORKS, Timing, choose, describe, measure
from ..checkpoints import fits
from ..data import TensorData
from ..device import cpu_bf16_supported, keep_freed_memory, synchronize
from ..distributed import Distributed
from ..engine import History, Hyper, Recipe, RunConfig, refuse_early, setting
from ..errors import CourseError
from ..evaluate import TTA_KEYS, evaluate_tta, tta_report
from ..limits import MAX_BUDGET
from ..models import SpeedNet, SpeedNetSmall, arch_name, build_model
from ..precision import PRECISIONS, check_precision, choose_bf16, speedup

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

# The values of the settings that change how the recipe runs (see the module's docstring).
# Measured on an NVIDIA H200 (benchmarks/2026-12-04-h200/): with compile and cuDNN's timing both
# on, a warm 10-epoch run trained in 1.92 s against 3.13 s without, but the first run of a process
# took 21.7 s for its first epoch, compilation included, and cuDNN's timing alone made a first
# run 0.7 s slower: one run (the CLI's) is faster without them.
COMPILES = ("off", "default", "reduce-overhead")  # eager; torch.compile; the same + CUDA graphs
OPTIMIZERS = ("sgd", "muon")  # airbench94's settings (above); airbench94_muon's (below)

# Muon (``optimizer="muon"``), from airbench94_muon's published settings. The run's lr is the
# filters' learning rate (``SpeedrunHyper``); the other rates are per image of the batch, because
# airbench sums the loss over a batch where this recipe takes its mean.
MUON_MOMENTUM = 0.6  # Nesterov momentum of the filters' updates
MUON_NS_STEPS = 3  # Newton-Schulz iterations that orthogonalize each update
MUON_BIAS_LR = 0.053  # BatchNorm's biases and the whitening bias, per image
# The linear head, per image. airbench's head divides its output by 256 where SpeedNet's divides
# by 9 and starts about 28 times smaller: the same change of the outputs takes (9/256)**2 the rate.
MUON_HEAD_LR = 0.67 * (9 / 256) ** 2
MUON_WEIGHT_DECAY = 2e-6  # per image of the batch, on all but the filters


@dataclass
class SpeedrunHyper(Hyper):
    """The speed-run's settings. Epochs, batch and learning rate depend on the device (and on
    the optimizer): None takes ``BY_DEVICE``'s (or ``MUON``'s), in ``resolved``."""

    epochs: int | None = setting(None, "epochs to train")  # type: ignore[assignment]
    batch_size: int | None = setting(  # type: ignore[assignment]
        None, "images per step (the global batch under torchrun)"
    )
    lr: float | None = setting(  # type: ignore[assignment]
        None, "the peak learning rate", note="at its batch size; scaled with --batch-size"
    )
    lookahead: bool = setting(
        True,
        "lookahead: every 5 steps the weights are pulled back towards a slow average of themselves",
    )
    ema: bool = setting(
        False,
        "evaluate and save an exponential moving average of the weights instead of the last "
        "weights (lesson 08 measures whether it pays)",
    )
    precision: str = setting(
        "auto",
        "fp32, or bf16 autocast (refused where it cannot run well); auto: bf16 on CUDA GPUs of "
        "compute capability 8 or newer and on CPUs where a few timed steps find it at least "
        "1.15x as fast. A resumed run keeps its checkpoint's precision",
        choices=PRECISIONS,
    )
    network: str | None = setting(
        None,
        "the network: speed_net (widths 64/256/256), speed_net_medium (48/192/192) or "
        "speed_net_small (32/128/128)",
        choices=NETWORKS,
    )
    budget: float | None = setting(
        None,
        "minutes for the whole run: a probe of this machine (about 20 s on a 2-core CPU) picks "
        "--network, --batch-size, --epochs and --lr so that training, tests and TTA fit them "
        "(lesson 08)",
        metavar="MINUTES",
    )
    optimizer: str = setting("sgd")  # or "muon"
    compile: str = setting("off")  # one of COMPILES; CUDA only
    cudnn_benchmark: bool = setting(False)  # CUDA only
    device_data_path: bool = setting(True)
    channels_last: bool = setting(True)
    bf16_speedup: float | None = setting(None)  # the bf16 probe's verdict, if already measured
    planned_at: float | None = setting(None)  # with --budget: time.time() when the probe began

    # epochs, global batch, peak learning rate for SGD on the mean loss of a batch: airbench94's
    # 11.5 per 1024 images, divided by 1 + 1 / (1 - momentum) like the weight decay
    BY_DEVICE: ClassVar[dict[str, dict[str, Any]]] = {
        "cuda": {"epochs": 10, "batch_size": 1024, "lr": 1.5, "network": "speed_net"},
        "cpu": {"epochs": 9, "batch_size": 512, "lr": 0.75, "network": "speed_net_small"},
    }  # Apple's MPS takes the CPU's
    # airbench94_muon's; Muon's lr is not scaled with the batch: its steps are orthogonalized
    MUON: ClassVar[dict[str, Any]] = {"epochs": 8, "batch_size": 2000, "lr": 0.24}

    def defaults(self, device_type: str) -> dict[str, Any]:
        """The epochs, batch, lr and network that None stands for on a device of
        ``device_type``."""
        by_device = self.BY_DEVICE["cuda" if device_type == "cuda" else "cpu"]
        return by_device | self.MUON if self.optimizer == "muon" else by_device

    def resolved(self, device_type: str) -> SpeedrunHyper:
        if self.budget is not None:
            self.check_budget()
        given = self.defaults(device_type)
        batch = given["batch_size"] if self.batch_size is None else self.batch_size
        network = given["network"] if self.network is None else self.network
        epochs = given["epochs"] if self.epochs is None else self.epochs
        return replace(
            self,
            epochs=epochs,
            batch_size=batch,
            lr=self.lr_at(batch, device_type),
            network=network,
        )

    def lr_at(self, batch: int, device_type: str) -> float:
        """The given lr, or the default one for ``batch``: airbench's SGD learning rate is per
        image, so it is scaled with the batch (Muon's is not)."""
        if self.lr is not None:
            return self.lr
        given = self.defaults(device_type)
        scale = 1.0 if self.optimizer == "muon" else batch / given["batch_size"]
        return given["lr"] * scale

    def check_budget(self) -> None:
        """Refuse, in one line, ``--budget`` with a setting that it chooses itself, with Muon,
        or out of range (before the probe)."""
        number = isinstance(self.budget, (int, float)) and not isinstance(self.budget, bool)
        if not (number and 0 < self.budget <= MAX_BUDGET):  # type: ignore[operator]
            got = f"{self.budget:g}" if number else repr(self.budget)
            raise CourseError(
                f"--budget must be a number of minutes above 0 and up to {MAX_BUDGET:,g}, got "
                f"{got}."
            )
        if self.budget < MIN_BUDGET:  # type: ignore[operator]
            raise CourseError(
                f"--budget {self.budget:g}: the probe alone takes about 20 s on a 2-core CPU; give "
                f"--budget {MIN_BUDGET:g} or more (the run then names the smallest that fits)."
            )
        chosen = [
            n for n in ("network", "batch_size", "epochs", "lr") if getattr(self, n) is not None
        ]
        if chosen:
            flags = " and ".join("--" + n.replace("_", "-") for n in chosen)
            raise CourseError(
                f"--budget chooses the network, the batch size, the epochs and the learning rate "
                f"itself; leave out {flags}, or leave out --budget."
            )
        if self.optimizer != "sgd":
            raise CourseError("--budget plans the recipe's SGD runs; leave out optimizer='muon'.")

    def planned(
        self,
        run: RunConfig,
        device: torch.device,
        job: Distributed | None,
        log: Callable[[str], None],
        probe: Callable[..., list[Timing]] = measure,
    ) -> SpeedrunHyper:
        """With ``--budget``: the network, batch, epochs and lr that a probe of this machine
        chooses (``cifar_course.budget``; ``probe`` times the candidates), and the log's first
        line, which says what it chose and why. Without it, the settings as they are."""
        if self.budget is None:
            return self
        if job is not None:
            raise CourseError(
                "--budget plans a run of one process; under torchrun give --network, "
                "--batch-size and --epochs instead."
            )
        if run.resume:
            raise CourseError(
                "--budget plans a new run; resume one with the --network, --batch-size and "
                "--epochs that its first line gave, without --budget."
            )
        if run.init_from:
            raise CourseError(
                "--budget plans a run from scratch, whose network it chooses; to start from "
                "--init-from's weights, give their --network and --epochs instead of --budget."
            )
        refuse_early(run, run.logdir or Speedrun.logdir, NETWORKS, MAX_BUDGET_EPOCHS)
        began, clock = time.time(), time.perf_counter()
        check_precision(device, None, self.precision)
        if device.type == "cpu":
            keep_freed_memory()  # before the probes, as before the run's steps (``build``)
        ratio = self.bf16_speedup
        if device.type == "cpu" and self.precision == "auto" and ratio is None:
            ratio = cpu_speedup(self.BY_DEVICE["cpu"]["batch_size"])
        amp, words = choose_bf16(device, None, self.precision, lambda: ratio or 0.0)

        lr_at = replace(self, lr=None).lr_at  # --budget refuses a given --lr

        def optimizer_for(model: nn.Module, batch: int) -> torch.optim.Optimizer:
            return make_optimizer(model, lr_at(batch, device.type), batch)  # type: ignore[arg-type]

        timings = probe(device, amp, optimizer_for)
        choice = choose(self.budget, timings, time.perf_counter() - clock)
        log(describe(self.budget, choice, words))
        batch = choice.timing.batch_size
        return replace(
            self,
            network=choice.timing.network,
            batch_size=batch,
            epochs=choice.epochs,
            lr=lr_at(batch, device.type),
            bf16_speedup=ratio,
            planned_at=began,
        )

    def validate(self) -> None:
        for name, known in (
            ("network", NETWORKS),
            ("optimizer", OPTIMIZERS),
            ("compile", COMPILES),
            ("precision", PRECISIONS),
        ):
            value = getattr(self, name)
            if value not in known:
                choices = ", ".join(repr(k) for k in known)
                raise CourseError(f"speedrun {name} = {value!r}: it must be one of {choices}.")
        if self.epochs is None or self.batch_size is None or self.lr is None:
            raise ValueError("validate the settings that resolved() returns")
        super().validate()


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
def init_whitening(model: SpeedNet, images: torch.Tensor, on_device: bool = True) -> None:
    """Set ``model.whiten`` from ``images`` in [0, 1] (normalized as the model does).

    Computed in float64. The patches' sums run on a CUDA GPU where the images are, with
    ``on_device`` (no copy of the images to the host), else on the CPU (Apple's MPS has no
    float64); the 12x12 eigendecomposition always runs on the CPU, so that every device gets
    LAPACK's eigenvectors, signs included. The filters are then copied to the model's device.
    """
    if not (on_device and images.device.type == "cuda"):
        images = images.cpu()
    normalized = (images - model.mean.to(images.device)) / model.std.to(images.device)
    mean_patch, covariance = (t.cpu() for t in patch_statistics(normalized))
    filters = filters_from_covariance(covariance)
    # Centre each output: a patch at the data's mean gives 0 before the GELU.
    centre = -(filters.reshape(len(filters), -1).double() @ mean_patch).float()
    model.whiten.weight.copy_(torch.cat([filters, -filters]))
    model.whiten.bias.copy_(torch.cat([centre, -centre]))


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


BF16_PROBE_STEPS = 3  # timed training steps of each precision, after one warm-up step each


@functools.cache
def cpu_bf16_speedup(batch_size: int, steps: int = BF16_PROBE_STEPS) -> float:
    """fp32's time for a training step of the CPU network at ``batch_size`` divided by bf16
    autocast's: above 1 where bf16 is faster (``precision.speedup``: one warm-up step of each,
    then ``steps`` of each in turn, the fastest counts), on two throwaway ``SpeedNetSmall`` and
    random images. The global random state is left alone. About 5 s at batch 512; measured once
    per batch size in each process."""
    with torch.random.fork_rng(devices=[]):
        generator = torch.Generator().manual_seed(0)
        images = torch.rand(batch_size, 3, 32, 32, generator=generator)
        images = images.contiguous(memory_format=torch.channels_last)
        targets = torch.randint(0, 10, (batch_size,), generator=generator)

        def step(bf16: bool) -> Callable[[], None]:
            model = SpeedNetSmall().to(memory_format=torch.channels_last)
            trained = [p for p in model.parameters() if p.requires_grad]
            optimizer = torch.optim.SGD(trained, lr=0.01, momentum=MOMENTUM, nesterov=True)

            def run() -> None:
                with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
                    loss = nn.functional.cross_entropy(model(images), targets)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()

            return run

        fp32, bf16 = speedup(step(False), step(True), torch.device("cpu"), repeats=steps)
    return fp32 / bf16


def cpu_speedup(batch_size: int, job: Distributed | None = None) -> float:
    """``cpu_bf16_speedup`` (0 where oneDNN has no bf16), averaged over torchrun's processes, so
    that they all decide alike: every process calls it once."""
    ratio = cpu_bf16_speedup(batch_size) if cpu_bf16_supported() else 0.0
    return distributed.mean_over_processes(ratio, job)


def uses_bf16(device: torch.device, batch_size: int = 512, job: Distributed | None = None) -> bool:
    """Whether the recipe trains in bf16 autocast on ``device`` at ``batch_size`` (per process)
    without ``--precision``: ``precision.choose_bf16`` with this recipe's probe."""
    return choose_bf16(device, None, "auto", lambda: cpu_speedup(batch_size, job))[0]


def check_extras(saved: dict[str, Any], path: str, model: nn.Module) -> None:
    """Refuse, before resuming, a checkpoint whose speed-run entries are not what the recipe
    saves: ``bf16`` a True or False, ``lookahead`` the slow weights, one finite tensor of the
    network's own shape for each of its floating-point tensors."""
    if "bf16" in saved and not isinstance(saved["bf16"], bool):
        raise CourseError(
            f"'{path}' holds bf16 = {saved['bf16']!r}, not True or False: the file is damaged "
            "or was edited. Use another checkpoint, or start a new run with --init-from."
        )
    slow = saved.get("lookahead")
    if slow is None:
        return
    live = {k: v for k, v in model.state_dict().items() if v.is_floating_point()}
    if not (
        isinstance(slow, dict)
        and slow.keys() == live.keys()
        and all(fits(v, live[k]) for k, v in slow.items())
    ):
        raise CourseError(
            f"'{path}' holds lookahead weights that do not fit {arch_name(model)}: the file is "
            "damaged or was edited. Use another checkpoint, or start a new run with --init-from."
        )


def model_for(device: torch.device) -> SpeedNet:
    """The recipe's network on ``device`` without ``--network``: ``SpeedNet`` on a CUDA GPU,
    ``SpeedNetSmall`` elsewhere."""
    return build_model(SpeedrunHyper().defaults(device.type)["network"])  # type: ignore[return-value]


def check_optimizer(saved: dict[str, Any], path: str, optimizer: str) -> None:
    """Refuse to resume a checkpoint written with the other optimizer (its state would not fit),
    in one line. Checkpoints from before Muon existed were written by SGD."""
    state = saved.get("optimizer")
    groups = state.get("param_groups") if isinstance(state, dict) else None
    groups = groups if isinstance(groups, list) else []  # a damaged state: check_resumable says
    wrote = "muon" if any(isinstance(g, dict) and "orthogonal" in g for g in groups) else "sgd"
    if wrote != optimizer:
        raise CourseError(
            f"'{path}' was trained with the {wrote!r} optimizer, and this run uses "
            f"{optimizer!r}: resume it with {wrote!r}, or start a new run from its weights with "
            "--init-from."
        )


class Speedrun(Recipe):
    """The speed-run: ``SpeedNet`` (or ``SpeedNetSmall`` off a GPU), whitened, and trained with
    airbench94's tricks. Subclasses may change ``lookahead_type`` or override ``build_model``,
    ``augment`` or ``probe_bf16`` to watch or vary a run (the tests do)."""

    name = "speedrun"
    hyper_type = SpeedrunHyper
    logdir = "runs/speed_net"
    hyper: SpeedrunHyper
    lookahead_type: ClassVar[type[Lookahead]] = Lookahead

    def build(self) -> None:
        hyper, device = self.hyper, self.device
        if device.type == "cpu":
            keep_freed_memory()  # about a quarter faster on Linux CPUs at batch 512
        layout = torch.channels_last if hyper.channels_last else torch.contiguous_format
        self.model = self.build_model().to(device, memory_format=layout)
        self.arch = arch_name(self.model)
        self.train = TensorData(True, device)
        synchronize(device)  # the data's copy to the device is not training time
        began = time.perf_counter()
        first = torch.arange(min(len(self.train), WHITEN_IMAGES), device=device)
        init_whitening(self.model, self.train.batch(first)[0], hyper.device_data_path)
        synchronize(device)
        self.setup_seconds = time.perf_counter() - began  # training time of epoch 1
        init_identity(self.model)
        self.muon = hyper.optimizer == "muon"
        self.optimizer = self.make_optimizer()
        self.loss_fn = nn.CrossEntropyLoss(label_smoothing=LABEL_SMOOTHING)
        self.batch, self.steps_per_epoch = self.per_process(len(self.train))

    def build_model(self) -> SpeedNet:
        """A fresh network: the settings' ``network``."""
        return build_model(self.hyper.network)  # type: ignore[return-value, arg-type]

    def make_optimizer(self) -> torch.optim.Optimizer:
        build = make_muon if self.muon else make_optimizer
        return build(self.model, self.hyper.lr, self.hyper.batch_size)

    def load(self, saved: dict[str, Any], path: str) -> None:
        arch = saved.get("arch")
        if arch in NETWORKS and arch != self.arch:
            raise CourseError(
                f"'{path}' was saved from {arch}, not {self.arch}; resume it with --network {arch}."
            )
        check_optimizer(saved, path, self.hyper.optimizer)
        config = saved.get("config")
        batch = config.get("batch_size") if isinstance(config, dict) else None
        if isinstance(batch, int) and batch != self.hyper.batch_size:
            # its schedule counts steps of that batch: another batch would jump the schedule
            raise CourseError(
                f"'{path}' was trained at batch {batch}, not {self.hyper.batch_size}; resume it "
                f"with --batch-size {batch}."
            )
        groups = (saved.get("optimizer") or {}).get("param_groups") or []
        if any(isinstance(g, dict) and "lr_scale" not in g for g in groups):
            raise CourseError(
                f"'{path}' was saved by the speedrun recipe of before 2026-11-28, whose "
                f"optimizer settings differ; start a new run from its weights with --init-from "
                f"'{path}' instead of --resume."
            )
        check_extras(saved, path, self.model)
        super().load(saved, path)  # the optimizer keeps its buffers and takes this run's settings

    def check(self, saved: dict[str, Any] | None) -> None:
        check_precision(self.device, saved, self.hyper.precision)

    def probe_bf16(self) -> float:
        """bf16's speed-up over fp32 on this CPU, for ``precision.choose_bf16`` (as ``--budget``'s
        probe measured it, if it did)."""
        if self.hyper.bf16_speedup is not None:
            return self.hyper.bf16_speedup
        return cpu_speedup(self.batch, self.job)

    def start(self, saved: dict[str, Any] | None) -> str:
        h, job, device, model = self.hyper, self.job, self.device, self.model
        self.test = TensorData(False, device) if self.main else None
        began = time.perf_counter()
        # on a CPU, without --precision, a probe of a few seconds
        processes = 1 if job is None else job.world_size
        self.amp, words = choose_bf16(device, saved, h.precision, self.probe_bf16, processes)
        self.setup_seconds += time.perf_counter() - began
        self.ema = EMA(model) if self.main and h.ema else None  # only rank 0 tests and saves
        self.train_model: nn.Module = model if job is None else distributed.wrap(model, job)
        self.compiled = job is None and device.type == "cuda" and h.compile != "off"
        if self.compiled:  # tests and checkpoints use the plain model, which shares the weights
            mode = None if h.compile == "default" else h.compile
            self.train_model = torch.compile(model, mode=mode, dynamic=False)  # type: ignore[assignment]
        # After wrap, which gives every process rank 0's weights. Each checkpoint holds the slow
        # weights too, so that a resumed run goes on exactly as if it had never stopped (without
        # --ema: then the checkpoint holds the average, not the weights that trained).
        self.lookahead = self.lookahead_type(model) if h.lookahead else None
        if self.lookahead is not None and saved is not None:
            self.lookahead.resume(saved, self.log)
        first = torch.Generator().manual_seed(self.seed)
        self.flips = (torch.rand(len(self.train), generator=first) < 0.5).to(device)
        self.cudnn_benchmark = torch.backends.cudnn.benchmark
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = h.cudnn_benchmark
        return (
            f"training {self.arch} (widths {'/'.join(map(str, model.widths))}) on "
            f"{distributed.describe(job, device)}: {h.epochs} epoch{'s' * (h.epochs != 1)}, "
            f"batch {h.batch_size}, peak lr {h.lr}, {words}, whitening, alternating flips, "
            f"{'lookahead' if h.lookahead else 'no lookahead'}, "
            f"{'weight EMA' if h.ema else 'no weight EMA'}, flip+shift TTA"
            + (", Muon" if self.muon else "")
            + (f", torch.compile ({h.compile})" if self.compiled else "")
        )

    @property
    def tested(self) -> nn.Module:
        """The last weights, or their average with ``--ema``."""
        return self.model if self.ema is None else self.ema.model

    def augment(
        self,
        images: torch.Tensor,
        idx: torch.Tensor,
        flip_now: torch.Tensor,
        generator: torch.Generator,
        shifts: torch.Tensor | None,
    ) -> torch.Tensor:
        """The batch of images ``idx`` as the network sees it: mirrored where ``flip_now`` says,
        then shifted (by ``shifts``, drawn for the whole epoch, or drawn now)."""
        images = torch.where(flip_now[idx].view(-1, 1, 1, 1), images.flip(3), images)
        return translate(images, generator, shifts)

    def train_epoch(self, epoch: int, writer: SummaryWriter | None) -> torch.Tensor:
        h, model, optimizer, device = self.hyper, self.model, self.optimizer, self.device
        generator, share = self.shuffle(epoch, len(self.train))
        self.train_model.train()
        if self.job is None and epoch >= WHITEN_BIAS_EPOCHS and not self.compiled:
            # Frozen for good: autograd then skips the backward pass into the whitening
            # layer (4-14 % of a CPU step in benchmarks/2026-11-28-cpu-lookahead/probes.log).
            # DDP fixes its gradient buckets at the wrap, and a compiled model would compile
            # again, so there the learning rate 0 of set_lr freezes it instead.
            model.whiten.bias.requires_grad_(False)
        flip_now = alternating_flip(self.flips, epoch)
        step, total = epoch * self.steps_per_epoch, self.steps_per_epoch * h.epochs
        ema_from = int(total * EMA_START)
        loss_sum = torch.zeros((), device=device)
        seen = 0
        batches = list(
            self.train.batch_indices(self.batch, shuffle=True, generator=generator, indices=share)
        )
        shifts = None
        if h.device_data_path:  # after the shuffle, the same numbers as translate would draw
            shifts = draw_shifts(sum(len(idx) for idx in batches), generator, device)
        for idx in batches:
            images, targets = self.train.batch(idx, channels_last=h.channels_last)
            drawn = None if shifts is None else shifts[seen : seen + len(idx)]
            images = self.augment(images, idx, flip_now, generator, drawn)
            if self.muon:
                set_muon_lr(optimizer, step, total, h.lr, self.steps_per_epoch)  # type: ignore[arg-type]
            else:
                set_lr(optimizer, schedule(step, total, h.lr), epoch)  # type: ignore[arg-type]
            if h.compile == "reduce-overhead" and self.compiled:
                torch.compiler.cudagraph_mark_step_begin()  # the last step's outputs are used
            with torch.autocast(device.type, torch.bfloat16, enabled=self.amp):
                loss = self.loss_fn(self.train_model(images), targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            if self.lookahead is not None and (step % LOOKAHEAD_EVERY == 0 or step == total):
                self.lookahead.update(model, lookahead_decay(step, total))
            if self.ema is not None:
                self.ema.update(model, decay=0.0 if step <= ema_from else None)
            loss_sum += loss.detach().float() * len(targets)
            seen += len(targets)
        return loss_sum / seen

    def evaluate(self, epoch: int) -> dict[str, float]:
        """Test accuracy, and with test-time augmentation after the last epoch only. With the
        EMA, the average is tested (and saved); resuming restarts the average from it."""
        assert self.test is not None
        with torch.autocast(self.device.type, torch.bfloat16, enabled=self.amp):
            views = evaluate_tta(self.tested, self.test, tta=epoch == self.hyper.epochs)
        return {TTA_KEYS[name]: value for name, value in views.items()}

    def extra(self) -> dict[str, Any]:
        slow = {} if self.lookahead is None else {"lookahead": self.lookahead.slow}
        return {"bf16": self.amp} | slow

    def close(self) -> None:
        if hasattr(self, "cudnn_benchmark"):
            torch.backends.cudnn.benchmark = self.cudnn_benchmark

    def report(self, history: History) -> list[str]:
        lines = tta_report(history)
        began = self.hyper.planned_at
        if self.hyper.budget is not None and began is not None:
            took = (time.time() - began) / 60
            over = took > self.hyper.budget
            lines.append(
                f"budget {self.hyper.budget:g} min: the run took {took:.1f} min, from the start "
                "of the probe to the end of the last test"
                + ("; over the budget: this machine ran slower than when it was probed" * over)
            )
        return lines


RECIPE = Speedrun
