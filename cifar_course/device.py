"""Choosing a device and timing work on it honestly (synchronize before reading the clock)."""

from __future__ import annotations

import ctypes
import sys
import time
from collections.abc import Callable
from types import TracebackType

import torch

from .errors import CourseError


def pick_device(name: str = "auto") -> torch.device:
    """``auto`` picks cuda, then mps, then cpu; a named device must be available."""
    mps = getattr(torch.backends, "mps", None)
    mps_ok = bool(mps is not None and mps.is_available())
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps") if mps_ok else torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise CourseError(
            "--device cuda was asked for, but PyTorch sees no CUDA GPU here. Use --device auto or "
            "cpu, or on Colab choose Runtime > Change runtime type > GPU."
        )
    if name == "mps" and not mps_ok:
        raise CourseError("--device mps needs an Apple-silicon Mac; use --device auto or cpu.")
    if name not in ("cpu", "cuda", "mps"):
        raise CourseError(f"Unknown device '{name}'; choose auto, cpu, cuda or mps.")
    return torch.device(name)


_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # mallopt() parameter numbers from glibc's <malloc.h>


def keep_freed_memory() -> bool:
    """Let this process reuse freed CPU memory instead of handing it back to the kernel.

    glibc's ``malloc`` serves every block over 32 MiB (one activation of a batch of 512 is 64 MiB)
    straight from the kernel with ``mmap`` and returns it on ``free``. A training step then asks
    for fresh pages again and again, and the kernel must zero each one: on the course's 2-core CPU
    that was 17-28 % of the time, spent in the kernel. Telling ``malloc`` to keep all memory in its
    own heap made lesson 06's training step 28 % faster there. The cost: the process keeps its
    peak memory until it exits. Linux with glibc only; returns whether the setting was applied.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl, for instance)
        return False
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 1 << 30))


def cpu_bf16_supported() -> bool:
    """Whether PyTorch's oneDNN can run bf16 on this CPU (natively, or emulated on AVX-512).
    False in a PyTorch built without oneDNN, where the query itself does not exist. The one check
    behind ``precision.mixed_dtype`` and so behind every choice of precision."""
    return torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def cuda_bf16_native(device: torch.device) -> bool:
    """Whether the CUDA GPU ``device`` has native bf16: Ampere (compute capability 8) or newer.
    Older GPUs (Colab's T4) run bf16 convolutions on slow fallback kernels, although
    ``torch.cuda.is_bf16_supported()`` says True there too."""
    return torch.cuda.get_device_capability(device)[0] >= 8


def synchronize(device: torch.device | str) -> None:
    """Wait until all queued work on ``device`` has finished (a no-op on the CPU)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


class Timer:
    """Context manager that synchronizes the device on entry and exit: ``with Timer(d) as t:``."""

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self.seconds = 0.0
        self._start = 0.0

    def __enter__(self) -> Timer:
        synchronize(self.device)
        self._start = time.perf_counter()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        synchronize(self.device)
        self.seconds = time.perf_counter() - self._start


def measure(
    fn: Callable[[], object], device: torch.device | str = "cpu", warmup: int = 1, repeat: int = 3
) -> list[float]:
    """Run ``fn`` ``warmup`` times untimed, then ``repeat`` times timed; return the seconds."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        with Timer(device) as t:
            fn()
        times.append(t.seconds)
    return times


def format_duration(seconds: float) -> str:
    """A run time as lessons print it: ``"48 s"``, ``"4 min 45 s"`` or ``"1 h 2 min 3 s"``."""
    total = round(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes} min {secs} s"
    return f"{minutes} min {secs} s" if minutes else f"{secs} s"


def describe_machine(device: torch.device | str | None = None) -> str:
    """One line naming the hardware and software, for notebook headers and benchmark output."""
    import platform

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    line = (
        f"torch {torch.__version__}, CPU: {cpu} ({torch.get_num_threads()} threads, "
        f"{torch.backends.cpu.get_cpu_capability()})"
    )
    if torch.cuda.is_available():
        line += f", GPU: {torch.cuda.get_device_name()}"
    if device is not None:
        line += f", running on: {torch.device(device).type}"
    return line
