"""Exercises for lesson 06, faster and better: a convolution block with BatchNorm and ReLU, the
triangular learning-rate schedule, and label smoothing's targets."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..augment import triangular_lr as _triangular_lr
from . import Exercise, NotYet, ____, as_number, run_learner, shape_text

__all__ = ["____", "q1", "q2", "q3"]


def _kind(layer: nn.Module) -> str:
    """The layer's class name, a lazy layer under the name of what it becomes."""
    name = type(layer).__name__
    return name.removeprefix("Lazy") if name in ("LazyBatchNorm2d", "LazyConv2d") else name


def _check_conv_block(conv_block: Any) -> str:
    if isinstance(conv_block, nn.Module):
        raise NotYet("pass the function itself, q1.check(conv_block), not a block it returned.")
    for c_in, c_out in ((3, 16), (16, 32), (5, 7)):
        block = run_learner("conv_block", conv_block, c_in, c_out)
        if not isinstance(block, nn.Module):
            raise NotYet(f"conv_block returned {type(block).__name__}; return an nn.Sequential.")
        layers = list(block) if isinstance(block, nn.Sequential) else [block]
        kinds = [_kind(layer) for layer in layers]
        shapes = {"BatchNorm1d": "[N, C] or [N, C, L]", "BatchNorm3d": "[N, C, D, H, W]"}
        other = [k for k in kinds if k in shapes]
        if other:
            raise NotYet(
                f"{other[0]} normalises inputs shaped {shapes[other[0]]}; a Conv2d's output, "
                "[N, C, H, W], needs BatchNorm2d."
            )
        if kinds[:3] == ["Conv2d", "BatchNorm2d", "ReLU"] and len(kinds) > 3:
            raise NotYet(
                f"your block is {' -> '.join(kinds)}: the order is right, but the block is the "
                f"three layers only; drop {', '.join(kinds[3:])}."
            )
        if kinds != ["Conv2d", "BatchNorm2d", "ReLU"]:
            raise NotYet(
                f"your block is {' -> '.join(kinds) or 'empty'}: BatchNorm should normalise what "
                "the convolution made, and the ReLU come last (as in the first three layers of "
                "lesson 06's step-2 block)."
            )
        conv, norm, _ = layers
        x = torch.randn(4, c_in, 8, 8)
        if isinstance(conv, nn.LazyConv2d):  # its in_channels come with the first input
            run_learner("your block", block.train(), x)
        if (conv.in_channels, conv.out_channels) != (c_in, c_out):
            raise NotYet(
                f"conv_block({c_in}, {c_out}) made Conv2d({conv.in_channels}, "
                f"{conv.out_channels}, ...)."
            )
        if not isinstance(norm, nn.LazyBatchNorm2d) and norm.num_features != c_out:
            raise NotYet(
                f"BatchNorm2d({norm.num_features}) follows a convolution with {c_out} output "
                "channels."
            )
        out = run_learner("your block", block.train(), x)  # a lazy BatchNorm2d learns its size
        if conv.dilation != (1, 1) or conv.groups != 1:
            raise NotYet(
                f"the convolution has dilation {conv.dilation[0]} and groups {conv.groups}; the "
                "block's is a plain Conv2d(c_in, c_out, kernel_size=3, padding=1, bias=False)."
            )
        if (
            conv.kernel_size != (3, 3)
            or conv.padding not in ((1, 1), "same")
            or conv.stride != (1, 1)
        ):
            raise NotYet(
                f"the convolution has kernel {conv.kernel_size[0]}, padding {conv.padding!r} and "
                f"stride {conv.stride[0]}; use kernel_size=3, padding=1, so the size stays the "
                "same."
            )
        if norm.num_features != c_out:
            raise NotYet(
                f"BatchNorm2d({norm.num_features}) follows a convolution with {c_out} output "
                "channels."
            )
        if conv.bias is not None:
            raise NotYet(
                "the convolution has a bias, which BatchNorm's subtraction of the mean cancels at "
                "once: pass bias=False."
            )
        if out.shape != (4, c_out, 8, 8):
            raise NotYet(
                f"for [4, {c_in}, 8, 8] your block outputs {shape_text(out.shape)}; expected "
                f"[4, {c_out}, 8, 8]."
            )
        if out.min() < 0:
            raise NotYet("your block outputs negative numbers; a ReLU at the end would not.")
    return (
        "Conv2d(bias=False) -> BatchNorm2d -> ReLU, and the shapes are kept: [4, 16, 8, 8] -> "
        "[4, 32, 8, 8]."
    )


def _check_triangular_lr(triangular_lr: Any) -> str:
    # then a warm-up of 2.5 steps and of 3.7 (it lasts int() of that: round() would give 4) and
    # of 0.6 (at least one)
    cases = [
        (100, 0.4, 0.2),
        (1176, 0.2, 0.25),
        (10, 1.0, 0.5),
        (10, 1.0, 0.25),
        (37, 1.0, 0.1),
        (3, 1.0, 0.2),
    ]
    for total, peak, warmup in cases:
        rise = int(total * warmup)
        steps = range(total + 1) if total <= 10 else (0, 1, rise // 2, rise, total // 2, total)
        for step in sorted({*steps, total - 1}):
            expected = _triangular_lr(step, total, peak, warmup)
            got = run_learner("triangular_lr", triangular_lr, step, total, peak, warmup=warmup)
            value = as_number(got, "triangular_lr", "the learning rate, a number")
            if abs(value - expected) > 1e-9 + 1e-6 * peak:
                where = f"at step {step} of {total} (peak {peak}, warm-up {warmup:.0%})"
                why = ""
                if total * warmup != rise or rise < 1:
                    why = (
                        f" Here total x warmup = {total * warmup:.3g}: the warm-up lasts "
                        "int(total * warmup) steps, and at least one."
                    )
                raise NotYet(
                    f"{where} you return {value:.6g}; the schedule gives {expected:.6g}.{why}"
                )
    return (
        "the rate climbs from 0 to the peak over the warm-up, then falls linearly, reaching 0 "
        "at step total."
    )


def _check_smooth_targets(smooth_targets: Any) -> str:
    # labels with the last class, labels without it (one_hot(labels) alone would then make too
    # few columns), and another number of classes
    cases = [([3, 0, 9], 10), ([2, 5, 1], 10), ([1, 0, 3, 3], 4)]
    for values, classes in cases:
        labels = torch.tensor(values)
        for smoothing in (0.2, 0.1):
            _check_smooth_case(smooth_targets, labels, classes, smoothing)
    return (
        "cross-entropy against your targets equals nn.CrossEntropyLoss(label_smoothing=...), for "
        "0.2 and 0.1, 10 classes and 4, whichever labels the batch holds."
    )


def _check_smooth_case(
    smooth_targets: Any, labels: torch.Tensor, classes: int, smoothing: float
) -> None:
    n = len(labels)
    got = run_learner("smooth_targets", smooth_targets, labels.clone(), classes, smoothing)
    if not isinstance(got, torch.Tensor):
        raise NotYet(f"smooth_targets returned {type(got).__name__}; return a tensor.")
    if got.shape != (n, classes):
        hint = ""
        if got.dim() == 2 and got.shape[1] == int(labels.max()) + 1:
            hint = (
                " one_hot(labels) alone makes one column per class up to the largest label in "
                "the batch: pass num_classes."
            )
        raise NotYet(
            f"for labels {labels.tolist()} and {classes} classes your targets have shape "
            f"{shape_text(got.shape)}; expected [{n}, {classes}].{hint}"
        )
    first, other_class = int(labels[0]), (int(labels[0]) + 1) % classes
    true, other = got[0, first].item(), got[0, other_class].item()
    expected_true, expected_other = 1 - smoothing + smoothing / classes, smoothing / classes
    if abs(true - expected_true) > 1e-6 or abs(other - expected_other) > 1e-6:
        sums = got.float().sum(1)
        if not torch.allclose(sums, torch.ones(n), atol=1e-5):
            reason = f"a target row must sum to 1, like a probability; yours sums to {sums[0]:.4g}."
        elif abs(true - (1 - smoothing)) < 1e-6:
            reason = (
                f"PyTorch spreads the {smoothing} over all {classes} classes, the true one "
                f"included, not over the {classes - 1} others."
            )
        else:
            reason = "they do not match PyTorch's label_smoothing."
        raise NotYet(
            f"with smoothing {smoothing} and {classes} classes your true class gets {true:.4g} "
            f"and the others {other:.4g}: {reason}"
        )
    logits = torch.randn(n, classes)
    theirs = -(got.float() * logits.log_softmax(1)).sum(1).mean()
    pytorch = nn.CrossEntropyLoss(label_smoothing=smoothing)(logits, labels)
    if not torch.allclose(theirs, pytorch, atol=1e-5):
        raise NotYet("your targets are right for the first image but not for all: check every row.")


q1 = Exercise(
    "q1: BatchNorm and ReLU in the right places",
    _check_conv_block,
    hint="""
        nn.Sequential(convolution, normalisation, activation). BatchNorm subtracts each channel's
        mean, so a bias in the convolution before it would be cancelled: bias=False.
    """,
    solution="""
        def conv_block(c_in, c_out):
            return nn.Sequential(
                nn.Conv2d(c_in, c_out, kernel_size=3, padding=1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(),
            )
    """,
)

q2 = Exercise(
    "q2: the triangular learning-rate schedule",
    _check_triangular_lr,
    hint="""
        Two straight lines. Work out the number of warm-up steps first; before it, the rate is
        the fraction of the warm-up done times the peak; after it, the fraction of the remaining
        steps still to go times the peak. Guard against a negative rate past the end.
    """,
    solution="""
        def triangular_lr(step, total, peak, warmup=0.2):
            rise = max(1, int(total * warmup))
            if step < rise:
                return peak * step / rise
            return peak * max(0.0, (total - step) / max(1, total - rise))
    """,
)

q3 = Exercise(
    "q3: label smoothing's targets",
    _check_smooth_targets,
    hint="""
        Think of the target as a mix: (1 - smoothing) of the one-hot target plus smoothing of
        the uniform distribution over all classes. torch.nn.functional.one_hot makes the first.
    """,
    solution="""
        def smooth_targets(labels, num_classes, smoothing):
            targets = torch.full((len(labels), num_classes), smoothing / num_classes)
            targets[torch.arange(len(labels)), labels] += 1 - smoothing
            return targets
    """,
)
