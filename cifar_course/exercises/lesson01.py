"""Exercises for lesson 01, the Sequential model: shapes, a network from a table, parameters."""

from __future__ import annotations

import numbers
from typing import Any

import torch
from torch import nn

from ..i18n import say
from ..models import LessonNetSequential
from . import Exercise, NotYet, ____, run_learner, shape_text, short

__all__ = ["____", "q1", "q2", "q3", "q4"]


def _whole_number(value: Any, said: str, advice: str) -> int:
    """``value`` as an int if it is a whole number of the right kind; else ``NotYet``."""
    if isinstance(value, bool) or isinstance(value, torch.Tensor):
        raise NotYet(say(f"{said}; return a Python int.", f"{said}；请返回 Python 的 int。"))
    if isinstance(value, float):
        raise NotYet(
            say(
                f"{said}, a float; sizes and counts are whole numbers: {advice}.",
                f"{said}，这是一个浮点数；大小和个数都是整数：{advice}。",
            )
        )
    if not isinstance(value, numbers.Integral):
        raise NotYet(say(f"{said}; return a Python int.", f"{said}；请返回 Python 的 int。"))
    return int(value)


def _conv_size(size: int, kernel_size: int, stride: int, padding: int) -> int:
    """What PyTorch itself gives: the height of a real convolution's output."""
    conv = nn.Conv2d(1, 1, kernel_size, stride=stride, padding=padding)
    return conv(torch.zeros(1, 1, size, size)).shape[-1]


def _check_conv_output_size(conv_output_size: Any) -> str:
    cases = [
        (32, 5, 1, 2),
        (32, 3, 1, 0),
        (64, 5, 1, 2),
        (28, 3, 2, 1),
        (7, 3, 2, 0),
        (10, 4, 3, 1),
    ]
    for size, kernel, stride, padding in cases:
        args = f"size={size}, kernel_size={kernel}, stride={stride}, padding={padding}"
        got = run_learner(
            "conv_output_size",
            conv_output_size,
            size,
            kernel_size=kernel,
            stride=stride,
            padding=padding,
        )
        expected = _conv_size(size, kernel, stride, padding)
        got = _whole_number(
            got,
            say(f"for {args} you return {short(got)}", f"对于 {args}，你返回的是 {short(got)}"),
            say("divide with //", "请用 // 做除法"),
        )
        if got != expected:
            raise NotYet(
                say(
                    f"for {args} you return {got}; PyTorch's Conv2d gives {expected}.",
                    f"对于 {args}，你返回的是 {got}；PyTorch 的 Conv2d 给出的是 {expected}。",
                )
            )
    return say(
        f"your formula matches Conv2d on all {len(cases)} cases, strides and paddings included.",
        f"你的公式在全部 {len(cases)} 个用例上都与 Conv2d 一致，不同的步幅和填充也都包括在内。",
    )


def _layer_shapes(net: nn.Sequential, x: torch.Tensor, count: int) -> list[torch.Size]:
    shapes = []
    with torch.no_grad():
        for layer in list(net)[:count]:
            x = layer(x)
            shapes.append(x.shape)
    return shapes


def _what_is_off(got: tuple[int, ...], want: tuple[int, ...]) -> str:
    """Which part of a shape is wrong, without handing over the right one."""
    if len(got) != len(want):
        if len(got) == len(want) - 1:
            return say(
                f"your shape {shape_text(got)} has no batch dimension: the 64 goes in front.",
                f"你的形状 {shape_text(got)} 没有批量维度：64 应该放在最前面。",
            )
        return say(
            f"your shape {shape_text(got)} should have {len(want)} numbers, not {len(got)}.",
            f"你的形状 {shape_text(got)} 应该有 {len(want)} 个数，而不是 {len(got)} 个。",
        )
    names = (
        [
            say("batch size", "批量大小"),
            say("channels", "通道数"),
            say("height", "高"),
            say("width", "宽"),
        ]
        if len(want) == 4
        else [say("batch size", "批量大小"), say("length", "长度")]
    )
    wrong = [name for name, a, b in zip(names, got, want, strict=True) if a != b]
    verb = "is" if len(wrong) == 1 else "are"
    return say(
        f"the {' and '.join(wrong)} in your {shape_text(got)} {verb} not what the layer gives.",
        f"你的 {shape_text(got)} 中的{'和'.join(wrong)}与这一层的输出不符。",
    )


def _check_shapes_64(shapes_64: Any) -> str:
    layers = LessonNetSequential().model
    expected = _layer_shapes(layers, torch.zeros(64, 3, 64, 64), 7)
    if not isinstance(shapes_64, list | tuple):
        raise NotYet(
            say(
                f"shapes_64 should be a list of 7 shapes; you gave {type(shapes_64).__name__}.",
                f"shapes_64 应当是由 7 个形状组成的列表；你给的是 {type(shapes_64).__name__}。",
            )
        )
    if len(shapes_64) != len(expected):
        raise NotYet(
            say(
                f"shapes_64 has {len(shapes_64)} shapes; write one for each of the first 7 "
                "layers, Conv2d to Flatten.",
                f"shapes_64 中有 {len(shapes_64)} 个形状；请为前 7 层（从 Conv2d 到 Flatten）"
                "各写一个。",
            )
        )
    for i, (got, want) in enumerate(zip(shapes_64, expected, strict=True)):
        layer = type(layers[i]).__name__
        try:
            got_shape = tuple(_whole_number(n, "", "") for n in got)
        except (TypeError, ValueError, NotYet):
            raise NotYet(
                say(
                    f"shape {i + 1} ({layer}) is {short(got)}; write it as a tuple of whole "
                    "numbers (ints): a layer's output has no fraction of a pixel or channel.",
                    f"第 {i + 1} 个形状（{layer}）是 {short(got)}；请把它写成由整数（int）"
                    "组成的元组：一层的输出里不会有零点几个像素或通道。",
                )
            ) from None
        if got_shape != tuple(want):
            off = _what_is_off(got_shape, tuple(want))
            raise NotYet(
                say(f"after layer {i + 1} ({layer}) {off}", f"第 {i + 1} 层（{layer}）之后，{off}")
            )
    return say(
        f"all 7 shapes are right. The flattened row holds {expected[-1][1]:,} numbers, so "
        "Linear(1024, 64) would fail on 64x64 images: it would need "
        f"Linear({expected[-1][1]}, 64).",
        f"7 个形状全部正确。展平后的一行有 {expected[-1][1]:,} 个数，所以 Linear(1024, 64) "
        f"在 64x64 的图像上会出错：这时需要的是 Linear({expected[-1][1]}, 64)。",
    )


# The layer table of exercise 3; the notebook shows it.
_TABLE: list[tuple[type[nn.Module], dict[str, int]]] = [
    (
        nn.Conv2d,
        {"in_channels": 3, "out_channels": 16, "kernel_size": 3, "stride": 1, "padding": 1},
    ),
    (nn.ReLU, {}),
    (nn.MaxPool2d, {"kernel_size": 2, "stride": 2}),
    (
        nn.Conv2d,
        {"in_channels": 16, "out_channels": 32, "kernel_size": 3, "stride": 1, "padding": 1},
    ),
    (nn.ReLU, {}),
    (nn.MaxPool2d, {"kernel_size": 2, "stride": 2}),
    (nn.Flatten, {}),
    (nn.Linear, {"in_features": 32 * 16 * 16, "out_features": 10}),  # the learner works it out
]


def _describe(kind: type[nn.Module], settings: dict[str, int]) -> str:
    return kind.__name__ + "(" + ", ".join(f"{k}={v}" for k, v in settings.items()) + ")"


def _settings_of(layer: nn.Module, names: dict[str, int]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for name in names:
        value = getattr(layer, name)
        if name == "padding" and value == "same":  # the same as (k - 1) // 2 for an odd kernel
            value = (layer.kernel_size[0] - 1) // 2
        found[name] = value[0] if isinstance(value, tuple) else value
    if isinstance(layer, nn.Conv2d | nn.Linear):
        found["bias"] = layer.bias is not None
    return found


# What each kind of layer in the table computes with, beyond the table's columns: a setting
# there that differs from PyTorch's default changes the network (ReLU's inplace does not).
_ALSO = {
    nn.Conv2d: ("dilation", "groups", "padding_mode"),
    nn.MaxPool2d: ("padding", "dilation", "ceil_mode", "return_indices"),
}


def _untabled_setting(layer: nn.Module, kind: type[nn.Module], settings: dict[str, int]) -> str:
    """The first setting of ``layer`` outside the table's columns that differs from what the
    table's layer has (PyTorch's default), as "NAME=VALUE (the default is ...)"; else ""."""
    reference = kind(**settings)
    for name in _ALSO.get(kind, ()):
        got, want = getattr(layer, name), getattr(reference, name)
        if got != want and not (isinstance(want, tuple) and got == want[0]):
            if isinstance(got, tuple) and len(set(got)) == 1 and got[0] == want:
                continue
            return say(
                f"{name}={got!r} (the table leaves it at PyTorch's default, {want!r})",
                f"{name}={got!r}（表中让它保持 PyTorch 的默认值 {want!r}）",
            )
    return ""


def _check_build_net(build_net: Any) -> str:
    if isinstance(build_net, nn.Module):
        raise NotYet(
            say(
                "pass the function itself, q3.check(build_net), not the network it returns.",
                "请传入函数本身，即 q3.check(build_net)，而不是它返回的网络。",
            )
        )
    net = run_learner("build_net", build_net)
    if not isinstance(net, nn.Sequential):
        raise NotYet(
            say(
                f"build_net should return an nn.Sequential; it returned {type(net).__name__}.",
                f"build_net 应当返回一个 nn.Sequential；它返回的是 {type(net).__name__}。",
            )
        )
    layers = list(net)
    for i, (kind, settings) in enumerate(_TABLE):
        want = _describe(kind, settings)
        if i >= len(layers):
            raise NotYet(
                say(
                    f"your network has {len(layers)} layers; row {i + 1} of the table, {want}, "
                    "is missing.",
                    f"你的网络只有 {len(layers)} 层；缺少表中的第 {i + 1} 行：{want}。",
                )
            )
        if type(layers[i]) is not kind:
            raise NotYet(
                say(
                    f"layer {i + 1} is {type(layers[i]).__name__}; the table has {want} there.",
                    f"第 {i + 1} 层是 {type(layers[i]).__name__}；表中这一层是 {want}。",
                )
            )
        got = _settings_of(layers[i], settings)
        if kind is nn.Linear:  # a wrong in_features shows as PyTorch's own error, below
            got["in_features"] = settings["in_features"]
        if got.pop("bias", True) is False:
            raise NotYet(
                say(
                    f"layer {i + 1} has no bias; the table's layers keep PyTorch's default, "
                    "bias=True.",
                    f"第 {i + 1} 层没有偏置；表中的层都保持 PyTorch 的默认值 bias=True。",
                )
            )
        if got != settings:
            raise NotYet(
                say(
                    f"layer {i + 1} is {_describe(kind, got)}; the table has {want}.",
                    f"第 {i + 1} 层是 {_describe(kind, got)}；表中是 {want}。",
                )
            )
        extra = _untabled_setting(layers[i], kind, settings)
        if extra:
            raise NotYet(
                say(
                    f"layer {i + 1} sets {extra}; build it as the table's {want}.",
                    f"第 {i + 1} 层设置了 {extra}；请按表中的 {want} 构建这一层。",
                )
            )
    if len(layers) > len(_TABLE):
        raise NotYet(
            say(
                f"your network has {len(layers)} layers; the table has {len(_TABLE)}.",
                f"你的网络有 {len(layers)} 层；表中有 {len(_TABLE)} 层。",
            )
        )
    x = torch.rand(2, 3, 64, 64)
    out = run_learner(say("your network", "你的网络"), net, x)
    if tuple(out.shape) != (2, 10):
        raise NotYet(
            say(
                f"for 2 images of 64x64 your network outputs {shape_text(out.shape)}; "
                "expected [2, 10].",
                f"对于 2 张 64x64 的图像，你的网络输出的形状是 {shape_text(out.shape)}；"
                "应当是 [2, 10]。",
            )
        )
    total = sum(p.numel() for p in net.parameters())
    return say(
        f"a batch of 2 images of 64x64 gives [2, 10], and the network has {total:,} parameters.",
        f"一个由 2 张 64x64 图像组成的批量得到 [2, 10]，网络共有 {total:,} 个参数。",
    )


def _check_conv_parameters(conv_parameters: Any) -> str:
    cases = [(3, 32, 5, True), (32, 64, 5, True), (16, 32, 3, False), (1, 1, 1, True)]
    for c_in, c_out, kernel, bias in cases:
        got = run_learner("conv_parameters", conv_parameters, c_in, c_out, kernel, bias=bias)
        layer = f"Conv2d({c_in}, {c_out}, {kernel}, bias={bias})"
        got = _whole_number(
            got,
            say(f"for {layer} you return {short(got)}", f"对于 {layer}，你返回的是 {short(got)}"),
            say("a count has no fraction", "个数不会有小数部分"),
        )
        expected = sum(p.numel() for p in nn.Conv2d(c_in, c_out, kernel, bias=bias).parameters())
        if got != expected:
            raise NotYet(
                say(
                    f"for {layer} you return {short(got)}; PyTorch's layer has {expected:,}.",
                    f"对于 {layer}，你返回的是 {short(got)}；PyTorch 的这一层有 {expected:,} 个"
                    "参数。",
                )
            )
    return say(
        f"your count matches nn.Conv2d's parameters on all {len(cases)} layers, with and without "
        "bias.",
        f"你的计数在全部 {len(cases)} 个层上都与 nn.Conv2d 的参数个数一致，有偏置和没有偏置的"
        "都包括在内。",
    )


q1 = Exercise(
    ("q1: the output size of a convolution", "q1：卷积的输出大小"),
    _check_conv_output_size,
    hint=(
        """
        Count the positions where the kernel fits. Padding adds `padding` pixels on each side;
        the first position uses `kernel_size` pixels, and each step moves `stride` further. Try
        it by hand for size 5, kernel 3, no padding, stride 1: the answer is 3.
        """,
        "数一数卷积核能放下的位置有多少个。填充在每一边各加上 `padding` 个像素；"
        "第一个位置占用 `kernel_size` 个像素，之后每一步再向前移动 `stride` 个像素。"
        "用手算一下大小为 5、卷积核为 3、没有填充、步幅为 1 的情况：答案是 3。",
    ),
    solution="""
        def conv_output_size(size, kernel_size, stride=1, padding=0):
            return (size + 2 * padding - kernel_size) // stride + 1
        """,
)

q2 = Exercise(
    ("q2: the shapes for 64x64 images", "q2：64x64 图像的形状"),
    _check_shapes_64,
    hint=(
        """
        Padding 2 with a 5x5 kernel keeps the size; each MaxPool2d(2) halves it; the channels are
        those of the last convolution. Flatten multiplies channels x height x width.
        """,
        "5x5 的卷积核配上填充 2 会保持大小不变；每个 MaxPool2d(2) 把大小减半；"
        "通道数就是前面最近那个卷积的输出通道数。Flatten 把通道数 x 高 x 宽乘起来。",
    ),
    solution=(
        """
        shapes_64 = [
            (64, 32, 64, 64),  # Conv2d(3, 32, 5, padding=2)
            (64, 32, 32, 32),  # MaxPool2d(2)
            (64, 32, 32, 32),  # Conv2d(32, 32, 5, padding=2)
            (64, 32, 16, 16),  # MaxPool2d(2)
            (64, 64, 16, 16),  # Conv2d(32, 64, 5, padding=2)
            (64, 64, 8, 8),  # MaxPool2d(2)
            (64, 4096),  # Flatten: 64 * 8 * 8
        ]
        """,
        """
        shapes_64 = [
            (64, 32, 64, 64),  # Conv2d(3, 32, 5, padding=2) 之后
            (64, 32, 32, 32),  # MaxPool2d(2) 之后
            (64, 32, 32, 32),  # Conv2d(32, 32, 5, padding=2) 之后
            (64, 32, 16, 16),  # MaxPool2d(2) 之后
            (64, 64, 16, 16),  # Conv2d(32, 64, 5, padding=2) 之后
            (64, 64, 8, 8),  # MaxPool2d(2) 之后
            (64, 4096),  # Flatten 之后：64 * 8 * 8
        ]
        """,
    ),
)

q3 = Exercise(
    ("q3: a Sequential from a layer table", "q3：由层表写出 Sequential"),
    _check_build_net,
    hint=(
        """
        Write the rows in order inside nn.Sequential(...). For the Linear layer, follow the size:
        64 -> 32 -> 16 after two max-pools, with 32 channels.
        """,
        "在 nn.Sequential(...) 中按顺序写出表中的各行。对于 Linear 层，跟着大小走："
        "经过两次最大池化，64 -> 32 -> 16，通道数是 32。",
    ),
    solution="""
        def build_net():
            return nn.Sequential(
                nn.Conv2d(3, 16, kernel_size=3, padding=1),
                nn.ReLU(),
                nn.MaxPool2d(2),
                nn.Conv2d(16, 32, kernel_size=3, padding=1),
                nn.ReLU(),
                nn.MaxPool2d(2),
                nn.Flatten(),
                nn.Linear(32 * 16 * 16, 10),
            )
        """,
)

q4 = Exercise(
    ("q4: the parameters of a convolution", "q4：卷积的参数"),
    _check_conv_parameters,
    hint=(
        """
        Each output channel has its own filter, and each filter looks at every input channel
        through a kernel_size x kernel_size window. The bias adds one number per output channel.
        """,
        "每个输出通道都有自己的滤波器，每个滤波器通过一个 kernel_size x kernel_size 的窗口"
        "查看每一个输入通道。偏置为每个输出通道增加一个数。",
    ),
    solution="""
        def conv_parameters(c_in, c_out, kernel_size, bias=True):
            return c_out * c_in * kernel_size * kernel_size + (c_out if bias else 0)
        """,
)
