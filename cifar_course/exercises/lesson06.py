"""Exercises for lesson 06, faster and better: a convolution block with BatchNorm and ReLU, the
triangular learning-rate schedule, and label smoothing's targets."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..augment import triangular_lr as _triangular_lr
from ..i18n import say
from . import Exercise, NotYet, ____, as_number, run_learner, shape_text

__all__ = ["____", "q1", "q2", "q3"]


def _kind(layer: nn.Module) -> str:
    """The layer's class name, a lazy layer under the name of what it becomes."""
    name = type(layer).__name__
    return name.removeprefix("Lazy") if name in ("LazyBatchNorm2d", "LazyConv2d") else name


def _check_conv_block(conv_block: Any) -> str:
    if isinstance(conv_block, nn.Module):
        raise NotYet(
            say(
                "pass the function itself, q1.check(conv_block), not a block it returned.",
                "请传入函数本身，即 q1.check(conv_block)，而不是它返回的块。",
            )
        )
    for c_in, c_out in ((3, 16), (16, 32), (5, 7)):
        block = run_learner("conv_block", conv_block, c_in, c_out)
        if not isinstance(block, nn.Module):
            raise NotYet(
                say(
                    f"conv_block returned {type(block).__name__}; return an nn.Sequential.",
                    f"conv_block 返回了 {type(block).__name__}；应返回一个 nn.Sequential。",
                )
            )
        layers = list(block) if isinstance(block, nn.Sequential) else [block]
        kinds = [_kind(layer) for layer in layers]
        shapes = {
            "BatchNorm1d": say("[N, C] or [N, C, L]", "[N, C] 或 [N, C, L]"),
            "BatchNorm3d": "[N, C, D, H, W]",
        }
        other = [k for k in kinds if k in shapes]
        if other:
            raise NotYet(
                say(
                    f"{other[0]} normalises inputs shaped {shapes[other[0]]}; a Conv2d's output, "
                    "[N, C, H, W], needs BatchNorm2d.",
                    f"{other[0]} 规范化的是形状为 {shapes[other[0]]} 的输入；Conv2d 的输出形状是 "
                    "[N, C, H, W]，需要用 BatchNorm2d。",
                )
            )
        if kinds[:3] == ["Conv2d", "BatchNorm2d", "ReLU"] and len(kinds) > 3:
            extra = say(", ", "、").join(kinds[3:])
            raise NotYet(
                say(
                    f"your block is {' -> '.join(kinds)}: the order is right, but the block is the "
                    f"three layers only; drop {extra}.",
                    f"你的块是 {' -> '.join(kinds)}：顺序是对的，但这个块只应包含这三层；"
                    f"请去掉 {extra}。",
                )
            )
        if kinds != ["Conv2d", "BatchNorm2d", "ReLU"]:
            shown = " -> ".join(kinds) or say("empty", "空的")
            raise NotYet(
                say(
                    f"your block is {shown}: BatchNorm should normalise what "
                    "the convolution made, and the ReLU come last (as in the first three layers of "
                    "lesson 06's step-2 block).",
                    f"你的块是 {shown}：BatchNorm 应当规范化卷积算出的结果，ReLU 应当放在最后"
                    "（就像第 06 课第 2 步的块的前三层那样）。",
                )
            )
        conv, norm, _ = layers
        yours = say("your block", "你的块")
        x = torch.randn(4, c_in, 8, 8)
        if isinstance(conv, nn.LazyConv2d):  # its in_channels come with the first input
            run_learner(yours, block.train(), x)
        if (conv.in_channels, conv.out_channels) != (c_in, c_out):
            raise NotYet(
                say(
                    f"conv_block({c_in}, {c_out}) made Conv2d({conv.in_channels}, "
                    f"{conv.out_channels}, ...).",
                    f"conv_block({c_in}, {c_out}) 构造出的是 Conv2d({conv.in_channels}, "
                    f"{conv.out_channels}, ...)。",
                )
            )
        if not isinstance(norm, nn.LazyBatchNorm2d) and norm.num_features != c_out:
            raise NotYet(
                say(
                    f"BatchNorm2d({norm.num_features}) follows a convolution with {c_out} output "
                    "channels.",
                    f"BatchNorm2d({norm.num_features}) 跟在一个输出通道数为 {c_out} 的卷积之后。",
                )
            )
        out = run_learner(yours, block.train(), x)  # a lazy BatchNorm2d learns its size
        if conv.dilation != (1, 1) or conv.groups != 1:
            raise NotYet(
                say(
                    f"the convolution has dilation {conv.dilation[0]} and groups {conv.groups}; "
                    "the block's is a plain Conv2d(c_in, c_out, kernel_size=3, padding=1, "
                    "bias=False).",
                    f"卷积的 dilation 为 {conv.dilation[0]}，groups 为 {conv.groups}；这个块里的"
                    "卷积应当是普通的 Conv2d(c_in, c_out, kernel_size=3, padding=1, bias=False)。",
                )
            )
        if (
            conv.kernel_size != (3, 3)
            or conv.padding not in ((1, 1), "same")
            or conv.stride != (1, 1)
        ):
            raise NotYet(
                say(
                    f"the convolution has kernel {conv.kernel_size[0]}, padding {conv.padding!r} "
                    f"and stride {conv.stride[0]}; use kernel_size=3, padding=1, so the size "
                    "stays the same.",
                    f"卷积的卷积核大小为 {conv.kernel_size[0]}，填充为 {conv.padding!r}，"
                    f"步幅为 {conv.stride[0]}；请用 kernel_size=3, padding=1，这样尺寸保持不变。",
                )
            )
        if norm.num_features != c_out:
            raise NotYet(
                say(
                    f"BatchNorm2d({norm.num_features}) follows a convolution with {c_out} output "
                    "channels.",
                    f"BatchNorm2d({norm.num_features}) 跟在一个输出通道数为 {c_out} 的卷积之后。",
                )
            )
        if conv.bias is not None:
            raise NotYet(
                say(
                    "the convolution has a bias, which BatchNorm's subtraction of the mean "
                    "cancels at once: pass bias=False.",
                    "卷积带有偏置，而 BatchNorm 减去均值时会立即把它抵消：请传入 bias=False。",
                )
            )
        if out.shape != (4, c_out, 8, 8):
            raise NotYet(
                say(
                    f"for [4, {c_in}, 8, 8] your block outputs {shape_text(out.shape)}; expected "
                    f"[4, {c_out}, 8, 8].",
                    f"输入 [4, {c_in}, 8, 8] 时，你的块输出的形状是 {shape_text(out.shape)}；"
                    f"应为 [4, {c_out}, 8, 8]。",
                )
            )
        if out.min() < 0:
            raise NotYet(
                say(
                    "your block outputs negative numbers; a ReLU at the end would not.",
                    "你的块输出了负数；如果最后一层是 ReLU，就不会这样。",
                )
            )
    return say(
        "Conv2d(bias=False) -> BatchNorm2d -> ReLU, and the shapes are kept: [4, 16, 8, 8] -> "
        "[4, 32, 8, 8].",
        "Conv2d(bias=False) -> BatchNorm2d -> ReLU，并且尺寸保持不变："
        "[4, 16, 8, 8] -> [4, 32, 8, 8]。",
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
            meaning = say("the learning rate, a number", "学习率（一个数）")
            value = as_number(got, "triangular_lr", meaning)
            if abs(value - expected) > 1e-9 + 1e-6 * peak:
                where = say(
                    f"at step {step} of {total} (peak {peak}, warm-up {warmup:.0%})",
                    f"在共 {total} 步中的第 {step} 步（峰值 {peak}，预热 {warmup:.0%}）",
                )
                why = ""
                if total * warmup != rise or rise < 1:
                    why = say(
                        f" Here total x warmup = {total * warmup:.3g}: the warm-up lasts "
                        "int(total * warmup) steps, and at least one.",
                        f"这里 total x warmup = {total * warmup:.3g}：预热持续 "
                        "int(total * warmup) 步，且至少一步。",
                    )
                raise NotYet(
                    say(
                        f"{where} you return {value:.6g}; the schedule gives {expected:.6g}.{why}",
                        f"{where}，你返回的是 {value:.6g}；"
                        f"学习率调度给出的是 {expected:.6g}。{why}",
                    )
                )
    return say(
        "the rate climbs from 0 to the peak over the warm-up, then falls linearly, reaching 0 "
        "at step total.",
        "学习率在预热期间从 0 升到峰值，然后线性下降，在第 total 步降到 0。",
    )


def _check_smooth_targets(smooth_targets: Any) -> str:
    # labels with the last class, labels without it (one_hot(labels) alone would then make too
    # few columns), and another number of classes
    cases = [([3, 0, 9], 10), ([2, 5, 1], 10), ([1, 0, 3, 3], 4)]
    for values, classes in cases:
        labels = torch.tensor(values)
        for smoothing in (0.2, 0.1):
            _check_smooth_case(smooth_targets, labels, classes, smoothing)
    return say(
        "cross-entropy against your targets equals nn.CrossEntropyLoss(label_smoothing=...), for "
        "0.2 and 0.1, 10 classes and 4, whichever labels the batch holds.",
        "用你的目标算出的交叉熵等于 nn.CrossEntropyLoss(label_smoothing=...)："
        "平滑系数为 0.2 和 0.1、类别数为 10 和 4 时都是如此，无论批量中有哪些标签。",
    )


def _check_smooth_case(
    smooth_targets: Any, labels: torch.Tensor, classes: int, smoothing: float
) -> None:
    n = len(labels)
    got = run_learner("smooth_targets", smooth_targets, labels.clone(), classes, smoothing)
    if not isinstance(got, torch.Tensor):
        raise NotYet(
            say(
                f"smooth_targets returned {type(got).__name__}; return a tensor.",
                f"smooth_targets 返回了 {type(got).__name__}；应返回一个张量。",
            )
        )
    if got.shape != (n, classes):
        hint = ""
        if got.dim() == 2 and got.shape[1] == int(labels.max()) + 1:
            hint = say(
                " one_hot(labels) alone makes one column per class up to the largest label in "
                "the batch: pass num_classes.",
                "只用 one_hot(labels) 时，它为从 0 到批量中最大标签的每个类别各生成一列："
                "请传入 num_classes。",
            )
        raise NotYet(
            say(
                f"for labels {labels.tolist()} and {classes} classes your targets have shape "
                f"{shape_text(got.shape)}; expected [{n}, {classes}].{hint}",
                f"对于标签 {labels.tolist()} 和 {classes} 个类别，你的目标的形状是 "
                f"{shape_text(got.shape)}；应为 [{n}, {classes}]。{hint}",
            )
        )
    first, other_class = int(labels[0]), (int(labels[0]) + 1) % classes
    true, other = got[0, first].item(), got[0, other_class].item()
    expected_true, expected_other = 1 - smoothing + smoothing / classes, smoothing / classes
    if abs(true - expected_true) > 1e-6 or abs(other - expected_other) > 1e-6:
        sums = got.float().sum(1)
        if not torch.allclose(sums, torch.ones(n), atol=1e-5):
            reason = say(
                f"a target row must sum to 1, like a probability; yours sums to {sums[0]:.4g}.",
                f"目标的每一行之和必须为 1，就像概率一样；你的一行之和是 {sums[0]:.4g}。",
            )
        elif abs(true - (1 - smoothing)) < 1e-6:
            reason = say(
                f"PyTorch spreads the {smoothing} over all {classes} classes, the true one "
                f"included, not over the {classes - 1} others.",
                f"PyTorch 把这 {smoothing} 平均分给全部 {classes} 个类别（真实类别也包括在内），"
                f"而不是只分给其余 {classes - 1} 个类别。",
            )
        else:
            reason = say(
                "they do not match PyTorch's label_smoothing.",
                "它们与 PyTorch 的 label_smoothing 给出的目标不一致。",
            )
        raise NotYet(
            say(
                f"with smoothing {smoothing} and {classes} classes your true class gets "
                f"{true:.4g} and the others {other:.4g}: {reason}",
                f"平滑系数为 {smoothing}、类别数为 {classes} 时，你给真实类别的是 {true:.4g}，"
                f"给其他类别的是 {other:.4g}：{reason}",
            )
        )
    logits = torch.randn(n, classes)
    theirs = -(got.float() * logits.log_softmax(1)).sum(1).mean()
    pytorch = nn.CrossEntropyLoss(label_smoothing=smoothing)(logits, labels)
    if not torch.allclose(theirs, pytorch, atol=1e-5):
        raise NotYet(
            say(
                "your targets are right for the first image but not for all: check every row.",
                "你的目标对第一张图像是对的，但并非对所有图像都对：请检查每一行。",
            )
        )


q1 = Exercise(
    ("q1: BatchNorm and ReLU in the right places", "q1：把 BatchNorm 和 ReLU 放在正确的位置"),
    _check_conv_block,
    hint=(
        """
        nn.Sequential(convolution, normalisation, activation). BatchNorm subtracts each channel's
        mean, so a bias in the convolution before it would be cancelled: bias=False.
        """,
        "nn.Sequential(卷积, 规范化, 激活函数)。BatchNorm 会减去每个通道的均值，"
        "所以它前面那个卷积里的偏置会被抵消掉：bias=False。",
    ),
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
    ("q2: the triangular learning-rate schedule", "q2：三角形学习率调度"),
    _check_triangular_lr,
    hint=(
        """
        Two straight lines. Work out the number of warm-up steps first; before it, the rate is
        the fraction of the warm-up done times the peak; after it, the fraction of the remaining
        steps still to go times the peak. Guard against a negative rate past the end.
        """,
        "两段直线。先算出预热的步数；预热结束之前，学习率等于预热已完成的比例乘以峰值；"
        "预热结束之后，等于预热后那一段步数中还没走完的比例乘以峰值。"
        "要防止越过终点后出现负的学习率。",
    ),
    solution="""
        def triangular_lr(step, total, peak, warmup=0.2):
            rise = max(1, int(total * warmup))
            if step < rise:
                return peak * step / rise
            return peak * max(0.0, (total - step) / max(1, total - rise))
        """,
)

q3 = Exercise(
    ("q3: label smoothing's targets", "q3：标签平滑的目标"),
    _check_smooth_targets,
    hint=(
        """
        Think of the target as a mix: (1 - smoothing) of the one-hot target plus smoothing of
        the uniform distribution over all classes. torch.nn.functional.one_hot makes the first.
        """,
        "把目标看作一个混合：(1 - smoothing) 份独热目标，加上 smoothing 份在所有类别上的"
        "均匀分布。torch.nn.functional.one_hot 可以生成前者。",
    ),
    solution="""
        def smooth_targets(labels, num_classes, smoothing):
            targets = torch.full((len(labels), num_classes), smoothing / num_classes)
            targets[torch.arange(len(labels)), labels] += 1 - smoothing
            return targets
        """,
)
