"""Exercises for lesson 01, the Sequential model: shapes, a network from a table, parameters."""

from __future__ import annotations

import numbers
from typing import Any

import torch
from torch import nn

from ..models import LessonNetSequential
from . import Exercise, NotYet, ____, run_learner, shape_text, short

__all__ = ["____", "q1", "q2", "q3", "q4"]


def _whole_number(value: Any, said: str, advice: str) -> int:
    """``value`` as an int if it is a whole number of the right kind; else ``NotYet``."""
    if isinstance(value, bool) or isinstance(value, torch.Tensor):
        raise NotYet(f"{said}; return a Python int.")
    if isinstance(value, float):
        raise NotYet(f"{said}, a float; sizes and counts are whole numbers: {advice}.")
    if not isinstance(value, numbers.Integral):
        raise NotYet(f"{said}; return a Python int.")
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
        got = _whole_number(got, f"for {args} you return {short(got)}", "divide with //")
        if got != expected:
            raise NotYet(f"for {args} you return {got}; PyTorch's Conv2d gives {expected}.")
    return f"your formula matches Conv2d on all {len(cases)} cases, strides and paddings included."


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
            return f"your shape {shape_text(got)} has no batch dimension: the 64 goes in front."
        return f"your shape {shape_text(got)} should have {len(want)} numbers, not {len(got)}."
    names = (
        ["batch size", "channels", "height", "width"]
        if len(want) == 4
        else ["batch size", "length"]
    )
    wrong = [name for name, a, b in zip(names, got, want, strict=True) if a != b]
    verb = "is" if len(wrong) == 1 else "are"
    return f"the {' and '.join(wrong)} in your {shape_text(got)} {verb} not what the layer gives."


def _check_shapes_64(shapes_64: Any) -> str:
    layers = LessonNetSequential().model
    expected = _layer_shapes(layers, torch.zeros(64, 3, 64, 64), 7)
    if not isinstance(shapes_64, list | tuple):
        raise NotYet(
            f"shapes_64 should be a list of 7 shapes; you gave {type(shapes_64).__name__}."
        )
    if len(shapes_64) != len(expected):
        raise NotYet(
            f"shapes_64 has {len(shapes_64)} shapes; write one for each of the first 7 layers, "
            "Conv2d to Flatten."
        )
    for i, (got, want) in enumerate(zip(shapes_64, expected, strict=True)):
        layer = type(layers[i]).__name__
        try:
            got_shape = tuple(_whole_number(n, "", "") for n in got)
        except (TypeError, ValueError, NotYet):
            raise NotYet(
                f"shape {i + 1} ({layer}) is {short(got)}; write it as a tuple of whole numbers "
                "(ints): a layer's output has no fraction of a pixel or channel."
            ) from None
        if got_shape != tuple(want):
            raise NotYet(f"after layer {i + 1} ({layer}) {_what_is_off(got_shape, tuple(want))}")
    return (
        f"all 7 shapes are right. The flattened row holds {expected[-1][1]:,} numbers, so "
        f"Linear(1024, 64) would fail on 64x64 images: it would need Linear({expected[-1][1]}, 64)."
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
            return f"{name}={got!r} (the table leaves it at PyTorch's default, {want!r})"
    return ""


def _check_build_net(build_net: Any) -> str:
    if isinstance(build_net, nn.Module):
        raise NotYet("pass the function itself, q3.check(build_net), not the network it returns.")
    net = run_learner("build_net", build_net)
    if not isinstance(net, nn.Sequential):
        raise NotYet(f"build_net should return an nn.Sequential; it returned {type(net).__name__}.")
    layers = list(net)
    for i, (kind, settings) in enumerate(_TABLE):
        want = _describe(kind, settings)
        if i >= len(layers):
            raise NotYet(
                f"your network has {len(layers)} layers; row {i + 1} of the table, {want}, is "
                "missing."
            )
        if type(layers[i]) is not kind:
            raise NotYet(
                f"layer {i + 1} is {type(layers[i]).__name__}; the table has {want} there."
            )
        got = _settings_of(layers[i], settings)
        if kind is nn.Linear:  # a wrong in_features shows as PyTorch's own error, below
            got["in_features"] = settings["in_features"]
        if got.pop("bias", True) is False:
            raise NotYet(
                f"layer {i + 1} has no bias; the table's layers keep PyTorch's default, bias=True."
            )
        if got != settings:
            raise NotYet(f"layer {i + 1} is {_describe(kind, got)}; the table has {want}.")
        extra = _untabled_setting(layers[i], kind, settings)
        if extra:
            raise NotYet(f"layer {i + 1} sets {extra}; build it as the table's {want}.")
    if len(layers) > len(_TABLE):
        raise NotYet(f"your network has {len(layers)} layers; the table has {len(_TABLE)}.")
    x = torch.rand(2, 3, 64, 64)
    out = run_learner("your network", net, x)
    if tuple(out.shape) != (2, 10):
        raise NotYet(
            f"for 2 images of 64x64 your network outputs {shape_text(out.shape)}; expected [2, 10]."
        )
    total = sum(p.numel() for p in net.parameters())
    return f"a batch of 2 images of 64x64 gives [2, 10], and the network has {total:,} parameters."


def _check_conv_parameters(conv_parameters: Any) -> str:
    cases = [(3, 32, 5, True), (32, 64, 5, True), (16, 32, 3, False), (1, 1, 1, True)]
    for c_in, c_out, kernel, bias in cases:
        got = run_learner("conv_parameters", conv_parameters, c_in, c_out, kernel, bias=bias)
        layer = f"Conv2d({c_in}, {c_out}, {kernel}, bias={bias})"
        got = _whole_number(got, f"for {layer} you return {short(got)}", "a count has no fraction")
        expected = sum(p.numel() for p in nn.Conv2d(c_in, c_out, kernel, bias=bias).parameters())
        if got != expected:
            raise NotYet(f"for {layer} you return {short(got)}; PyTorch's layer has {expected:,}.")
    return (
        f"your count matches nn.Conv2d's parameters on all {len(cases)} layers, with and without "
        "bias."
    )


q1 = Exercise(
    "q1: the output size of a convolution",
    _check_conv_output_size,
    hint="""
        Count the positions where the kernel fits. Padding adds `padding` pixels on each side;
        the first position uses `kernel_size` pixels, and each step moves `stride` further. Try
        it by hand for size 5, kernel 3, no padding, stride 1: the answer is 3.
    """,
    solution="""
        def conv_output_size(size, kernel_size, stride=1, padding=0):
            return (size + 2 * padding - kernel_size) // stride + 1
    """,
)

q2 = Exercise(
    "q2: the shapes for 64x64 images",
    _check_shapes_64,
    hint="""
        Padding 2 with a 5x5 kernel keeps the size; each MaxPool2d(2) halves it; the channels are
        those of the last convolution. Flatten multiplies channels x height x width.
    """,
    solution="""
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
)

q3 = Exercise(
    "q3: a Sequential from a layer table",
    _check_build_net,
    hint="""
        Write the rows in order inside nn.Sequential(...). For the Linear layer, follow the size:
        64 -> 32 -> 16 after two max-pools, with 32 channels.
    """,
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
    "q4: the parameters of a convolution",
    _check_conv_parameters,
    hint="""
        Each output channel has its own filter, and each filter looks at every input channel
        through a kernel_size x kernel_size window. The bias adds one number per output channel.
    """,
    solution="""
        def conv_parameters(c_in, c_out, kernel_size, bias=True):
            return c_out * c_in * kernel_size * kernel_size + (c_out if bias else 0)
    """,
)
