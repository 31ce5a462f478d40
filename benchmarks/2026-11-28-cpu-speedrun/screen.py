"""Screening runs for the CPU speed-run: airbench's remaining tricks, patched in from outside.

Run on 2026-11-28 against the package at commit 0da9d37 (before those tricks were part of it; its
make_optimizer/set_lr/model_for/triangular_lr are replaced below), from a clean worktree:

    PYTHONPATH=<worktree at 0da9d37> python screen.py VARIANT EPOCHS SEED

VARIANT: base (that commit's recipe, no EMA) | dirac_bias (+ identity init, BatchNorm biases at
64x the learning rate) | air (+ airbench94's momentum, decoupled lr and weight decay, schedule).
The recipe of commit 113a704 is "air" (the logs: screen_<variant>_3_0.log).
"""

import sys
import tempfile

import torch
from torch import nn

from cifar_course import speedrun
from cifar_course.models import SpeedNetSmall
from cifar_course.training import TrainConfig

variant, epochs, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
batch = 512
BIAS_SCALE = 64.0


def model_for(device):
    model = SpeedNetSmall()
    if variant != "base":
        for m in model.layers.modules():
            if isinstance(m, nn.Conv2d):
                w = m.weight.data
                nn.init.dirac_(w[: w.size(1)])  # the first c_in filters pass their input through
    return model


if variant == "air":
    momentum = 0.85
    kilostep = 1024 * (1 + 1 / (1 - momentum))
    lr_example = 11.5 / kilostep  # per example, for a summed loss
    peak = lr_example * batch  # for the mean loss of a batch
    wd_step = 0.0153 * batch / kilostep  # decay per step at the peak, decoupled from lr
else:
    momentum = 0.9
    peak = 0.2
    wd_step = 5e-4 * peak


def make_optimizer(model):
    bn_bias, weights, whiten_bias = [], [], [model.whiten.bias]
    for name, p in model.named_parameters():
        if p.requires_grad and name != "whiten.bias":
            (weights if p.ndim > 1 else bn_bias).append(p)
    scale = BIAS_SCALE if variant != "base" else 1.0
    groups = [
        {"params": weights, "weight_decay": wd_step / peak, "scale": 1.0},
        {
            "params": bn_bias,
            "weight_decay": (wd_step / (peak * scale)) if variant == "air" else 0.0,
            "scale": scale,
        },
        {"params": whiten_bias, "weight_decay": 0.0, "scale": 1.0},
    ]
    return torch.optim.SGD(groups, lr=0.0, momentum=momentum, nesterov=True)


def set_lr(optimizer, lr, epoch):
    *groups, wb = optimizer.param_groups
    for g in groups:
        g["lr"] = lr * g["scale"]
    wb["lr"] = lr if epoch < speedrun.WHITEN_BIAS_EPOCHS else 0.0


def triangle(step, total, peak_lr, warmup):
    rise = int(total * 0.23)
    if step < rise:
        return peak_lr * (0.2 + 0.8 * step / rise)
    return peak_lr * (1.0 + (0.07 - 1.0) * (step - rise) / max(1, total - rise))


speedrun.model_for = model_for
speedrun.make_optimizer = make_optimizer
speedrun.set_lr = set_lr
if variant == "air":
    speedrun.triangular_lr = triangle
with tempfile.TemporaryDirectory() as d:
    print(
        f"variant {variant}: peak lr {peak:.4f}, momentum {momentum}, wd/step {wd_step:.2e}",
        flush=True,
    )
    cfg = TrainConfig(
        epochs=epochs,
        batch_size=batch,
        lr=peak,
        device="cpu",
        seed=seed,
        out=d + "/c",
        logdir=d + "/r",
        recipe="speedrun",
        ema=False,
    )
    speedrun.fit_speedrun(cfg, log=lambda s: print(s, flush=True))
