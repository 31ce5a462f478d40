"""Mixed precision, decided in one place: where bf16 (or fp16) can run, the one speed probe that
finds out whether it pays, and the rules for choosing, refusing and resuming a precision.

The weights and the optimizer always stay in fp32; "mixed precision" means autocast, which runs
the matrix multiplications and convolutions in 16 bits. Whether that is faster depends on the
processor: on an Intel Xeon with AMX bf16 steps of the speed-run's CPU network were 1.7 times as
fast as fp32 ones; on one with AVX-512 BF16 but no AMX, slower (lesson 04); an AMD EPYC without
native bf16 emulates it (``benchmarks/README.md``). So on a CPU a short probe decides.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import torch

from .device import cpu_bf16_supported, cuda_bf16_native, synchronize
from .errors import CourseError

MIN_SPEEDUP = 1.15  # on a CPU, mixed precision must make training steps this many times faster
PRECISIONS = ("auto", "fp32", "bf16")  # what --precision accepts


def mixed_dtype(device: torch.device, fp16: bool = False) -> torch.dtype | None:
    """The 16-bit type worth trying on ``device``, or None where none would pay.

    bf16 on a CUDA GPU with native bf16 (Ampere, compute capability 8, or newer) and on a CPU
    whose oneDNN has bf16 (natively, or emulated on AVX-512: the probe then decides); fp16 on an
    older GPU if ``fp16`` (the caller then needs a gradient scaler); nothing elsewhere."""
    if device.type == "cuda":
        if cuda_bf16_native(device):
            return torch.bfloat16
        return torch.float16 if fp16 else None
    if device.type == "cpu" and cpu_bf16_supported():
        return torch.bfloat16
    return None


def speedup(
    fp32_block: Callable[[], object],
    mixed_block: Callable[[], object],
    device: torch.device,
    repeats: int = 3,
    clock: Callable[[], float] = time.perf_counter,
) -> tuple[float, float]:
    """The fastest time of ``fp32_block`` and of ``mixed_block`` (each a few training steps on
    throwaway copies of a model), timed in turn: one warm-up call of each, then ``repeats``
    calls of each, alternating, with ``device`` synchronized around each. The fastest call
    counts, so that a moment when the machine runs slow cannot decide alone (with the two timed
    one after the other, one probe on a 2-core Xeon with AMX once found 1.09 where five others
    found 1.65-2.09). Returns ``(fp32 seconds, mixed seconds)``."""
    fastest = [math.inf, math.inf]
    for i in range(1 + repeats):
        for k, block in enumerate((fp32_block, mixed_block)):
            synchronize(device)
            began = clock()
            block()
            synchronize(device)
            if i > 0:  # the first call of each is a warm-up
                fastest[k] = min(fastest[k], clock() - began)
    return fastest[0], fastest[1]


def pays(fp32_seconds: float, mixed_seconds: float, device: torch.device) -> bool:
    """Whether a probe's times make mixed precision worth it: on a CPU, where it costs some
    accuracy and its speed varies most, when it is at least ``MIN_SPEEDUP`` times as fast; on
    a GPU, when it is at least as fast."""
    needed = MIN_SPEEDUP if device.type == "cpu" else 1.0
    return mixed_seconds > 0 and fp32_seconds / mixed_seconds >= needed


def bf16_refusal(device: torch.device) -> str | None:
    """Why ``--precision bf16`` cannot be followed on ``device``, or None where it can: a CPU
    whose oneDNN has no bf16, a CUDA GPU older than Ampere, whose bf16 convolutions would run on
    slow fallback kernels, or another device."""
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
    or, for a resumed run (``saved``, its checkpoint), a precision other than the one it goes on
    in. Called before anything is written."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
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
    saved: dict[str, Any] | None,
    precision: str,
    probe: Callable[[], float],
    processes: int = 1,
) -> tuple[bool, str]:
    """(train in bf16?, the log's words for it), once ``check_precision`` has passed.

    A resumed run keeps the precision its checkpoint was trained in, so that it goes on as if it
    had never stopped. Otherwise ``precision`` decides: "fp32", "bf16", or "auto": bf16 on a
    CUDA GPU with native bf16; on a CPU where ``probe()`` (bf16's speed-up over fp32, 0 where
    oneDNN has none; the mean over ``processes`` under torchrun) reaches ``MIN_SPEEDUP``;
    fp32 elsewhere (Apple's MPS, older GPUs)."""
    if saved is not None and "bf16" in saved:
        amp = resumed_bf16(device, bool(saved["bf16"]))
        if amp != bool(saved["bf16"]):
            return False, "fp32 (the resumed run trained in bf16, which this CPU cannot run)"
        return amp, f"{'bf16 autocast' if amp else 'fp32'}, as the run it resumes"
    if precision != "auto":
        words = "bf16 autocast" if precision == "bf16" else "fp32"
        return precision == "bf16", f"{words} (--precision {precision})"
    if device.type != "cpu":
        amp = mixed_dtype(device) == torch.bfloat16
        return amp, "bf16 autocast" if amp else "fp32"
    ratio = probe()
    amp = ratio >= MIN_SPEEDUP  # a CPU: see ``pays``
    if not cpu_bf16_supported():
        return amp, "fp32 (this CPU has no bf16)"
    mean = "mean over the processes " if processes > 1 else ""
    return amp, f"{'bf16 autocast' if amp else 'fp32'} (bf16 probe, {mean}{ratio:.2f}x fp32)"
