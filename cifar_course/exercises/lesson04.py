"""Exercises for lesson 04, GPU versus CPU: moving a model and a batch, timing asynchronous work,
and choosing the device.

They run without a GPU. The move is checked on PyTorch's ``meta`` device, which behaves like a
second device but holds no data. The timing is checked against a simulated GPU: its ``run()``
returns at once and its work finishes later, as a CUDA kernel launch does, and only ``sync()``
waits for it, as ``torch.cuda.synchronize()`` does.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any
from unittest import mock

import torch
from torch import nn

from . import Exercise, NotYet, ____, as_number, run_learner, short

__all__ = ["____", "q1", "q2", "q3", "SimulatedGPU"]


def _where(tensor: Any) -> str:
    return str(tensor.device) if isinstance(tensor, torch.Tensor) else type(tensor).__name__


def _lesson_model() -> nn.Module:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.LazyLinear(10))
    model(torch.zeros(1, 3, 8, 8))
    return model


def _returned(result: Any) -> tuple[nn.Module, Any, Any]:
    if not isinstance(result, tuple | list) or len(result) != 3:
        raise NotYet("to_device should return three things, as a tuple: model, images, labels.")
    model, images, labels = result
    if not isinstance(model, nn.Module):
        raise NotYet(f"the first thing returned should be the model; it is {type(model).__name__}.")
    return model, images, labels


def _moved_by_recording(to_device: Any) -> None:
    """Run ``to_device`` towards the CPU with ``Tensor.to`` recorded: for answers that set
    ``p.data = p.data.to(device)``, which PyTorch allows between real devices but not from the
    CPU to 'meta'. Each tensor that ``.to`` returns is a fresh copy, so an answer that drops
    what ``.to`` returned is seen."""
    real_to = torch.Tensor.to
    copies: set[int] = set()

    def recording_to(tensor: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        moved = real_to(tensor, *args, **kwargs)
        if moved.device.type == "cpu":
            moved = moved.clone()
            copies.add(moved.data_ptr())
        return moved

    model = _lesson_model()
    images, labels = torch.rand(4, 3, 8, 8), torch.tensor([1, 2, 3, 4])
    with mock.patch.object(torch.Tensor, "to", recording_to):
        result = run_learner("to_device", to_device, model, images, labels, torch.device("cpu"))
    got_model, got_images, got_labels = _returned(result)
    for name, after in (("images", got_images), ("labels", got_labels)):
        if not isinstance(after, torch.Tensor) or after.data_ptr() not in copies:
            raise NotYet(
                f"{name} is not the tensor that {name}.to(device) returned: Tensor.to returns a "
                f"new tensor and leaves the old one where it was, so write {name} = "
                f"{name}.to(device)."
            )
    stray = [n for n, p in got_model.named_parameters() if p.data_ptr() not in copies]
    if stray:
        raise NotYet(f"the model's {stray[0]} was not moved to the device.")


def _check_to_device(to_device: Any) -> str:
    for target in ("meta", "cpu"):
        model = _lesson_model()
        weights = {k: v.clone() for k, v in model.state_dict().items()}
        images, labels = torch.rand(4, 3, 8, 8), torch.tensor([1, 2, 3, 4])
        device = torch.device(target)
        try:
            result = run_learner("to_device", to_device, model, images, labels, device)
        except NotYet as exc:
            cause = exc.__cause__
            if target == "meta" and isinstance(cause, RuntimeError) and "set_data" in str(cause):
                _moved_by_recording(to_device)  # p.data = p.data.to(device): see there
                continue
            raise
        model, images, labels = _returned(result)
        stayed = [
            isinstance(t, torch.Tensor) and t.device.type == "cpu"
            for t in (images, labels, *model.parameters())
        ]
        if target == "meta" and all(stayed):
            raise NotYet(
                "asked for the device 'meta', everything stayed on the CPU: move to the device "
                "you are given, the argument device, not one your function picks."
            )
        for name, value in (("images", images), ("labels", labels)):
            if not isinstance(value, torch.Tensor):
                raise NotYet(f"{name} came back as {type(value).__name__}, not a tensor.")
            if value.device.type != target:
                raise NotYet(
                    f"{name} is still on {_where(value)}, not {target}: Tensor.to returns a new "
                    f"tensor and leaves the old one where it was, so write {name} = "
                    f"{name}.to(device)."
                )
        if labels.dtype != torch.long:
            raise NotYet(
                f"labels became {labels.dtype}; move them with .to(device) alone, keeping "
                "torch.long."
            )
        if images.dtype != torch.float32:
            raise NotYet(
                f"images became {images.dtype}; move them with .to(device) alone: the model's "
                "weights are float32, and so must its input be."
            )
        other = [p.dtype for p in model.parameters() if p.dtype != torch.float32]
        if other:
            raise NotYet(
                f"the model's weights became {other[0]}; move it with .to(device) alone, keeping "
                "float32 like its input."
            )
        stray = [n for n, p in model.named_parameters() if p.device.type != target]
        if stray:
            raise NotYet(
                f"the model's {stray[0]} is still on {model.get_parameter(stray[0]).device}, "
                f"not {target}."
            )
        if target == "cpu":
            changed = [k for k, v in model.state_dict().items() if not torch.equal(v, weights[k])]
            if changed:
                raise NotYet(
                    f"the model's {changed[0]} holds other values after the move: moving must "
                    "keep the weights (to_empty gives new, uninitialized memory); use "
                    "model.to(device)."
                )
    return (
        "model, images and labels all arrive on the device asked for (checked with 'meta' and "
        "'cpu'), the weights unchanged."
    )


class SimulatedGPU:
    """A stand-in for a GPU: ``run()`` queues work and returns at once; ``sync()`` waits for it.

    Each call's work takes ``work`` seconds, and the very first call ``first_call`` more (like
    cuDNN choosing an algorithm, or a compilation). It keeps a log of the calls, for the check.
    """

    def __init__(self, work: float = 0.004, first_call: float = 0.05) -> None:
        self.work, self.first_call = work, first_call
        self.busy_until = 0.0
        self.log: list[str] = []

    def run(self) -> None:
        """Queue one call's work and return without waiting, as a CUDA launch does."""
        now = time.perf_counter()
        cost = self.work + (self.first_call if not self.log.count("run") else 0.0)
        self.busy_until = max(now, self.busy_until) + cost
        self.log.append("run")

    def sync(self) -> None:
        """Wait until all queued work is done, as torch.cuda.synchronize() does."""
        time.sleep(max(0.0, self.busy_until - time.perf_counter()))
        self.log.append("sync")


def _check_time_op(time_op: Any) -> str:
    # the defaults, then other counts: an answer that ignores its arguments is seen
    for warmup, repeats in ((3, 10), (2, 7), (5, 4)):
        ms, work_ms = _time_op_once(time_op, warmup, repeats)
    return (
        f"{ms:.2f} ms per call, for work of {work_ms:.0f} ms: warm-up excluded, and synchronized "
        "before both readings of the clock, whatever the counts of warm-up and timed calls."
    )


def _time_op_once(time_op: Any, warmup: int, repeats: int) -> tuple[float, float]:
    """Time a fresh ``SimulatedGPU`` with the learner's ``time_op``; its ms and the work's ms."""
    gpu = SimulatedGPU()
    got = run_learner("time_op", time_op, gpu.run, gpu.sync, warmup=warmup, repeats=repeats)
    seconds = as_number(got, "time_op", "the seconds per call, one number")
    runs = gpu.log.count("run")
    ms, work_ms = seconds * 1000, gpu.work * 1000
    counts = f"warmup={warmup}, repeats={repeats}"
    if runs != warmup + repeats:
        raise NotYet(
            f"with {counts}, run was called {runs} times; expected {warmup} warm-up calls and "
            f"{repeats} timed ones: use the arguments, not fixed numbers."
        )
    run_at = [i for i, event in enumerate(gpu.log) if event == "run"]
    if warmup and "sync" not in gpu.log[run_at[warmup - 1] : run_at[warmup]]:
        raise NotYet(
            f"nothing waits for the {warmup} warm-up calls to finish before the timed calls: call "
            "sync() after the warm-up, then start the clock."
        )
    if gpu.log[-1] != "sync" or ms < 0.5 * work_ms:
        raise NotYet(
            f"you measured {ms:.2f} ms per call, but each call keeps the GPU busy for "
            f"{work_ms:.0f} ms: the clock stopped before the work finished. Call sync(), then "
            "read the clock."
        )
    if abs(ms / 1000 - work_ms) < 0.5 * work_ms:
        raise NotYet(f"you return {seconds:.4g}: that looks like milliseconds; return seconds.")
    if abs(ms - work_ms * repeats) < abs(ms - work_ms):
        raise NotYet(f"you return {ms:.1f} ms, the time of all {repeats} calls; divide by repeats.")
    everything = (gpu.first_call * 1000 + (warmup + repeats) * work_ms) / repeats
    if abs(ms - everything) < abs(ms - work_ms):
        raise NotYet(
            f"you measured {ms:.2f} ms per call, about the warm-up and the timed calls together "
            f"({everything:.1f} ms) over {repeats}: the clock started before the warm-up. "
            "Start it after the warm-up and its sync()."
        )
    # with few timed calls, dividing by one call too few is far off (5.3 ms for 4 with 4 calls);
    # with many, too close to tell from a busy machine's own delays
    one_less = work_ms * repeats / (repeats - 1) if repeats > 1 else float("inf")
    if repeats <= 4 and abs(ms - one_less) < abs(ms - work_ms):
        raise NotYet(
            f"with {counts} you return {ms:.2f} ms per call for {work_ms:.0f} ms of work: that is "
            f"the time of {repeats} calls divided by {repeats - 1}; divide by repeats."
        )
    if not 0.95 * work_ms <= ms <= 1.75 * work_ms:
        raise NotYet(
            f"with {counts} you measured {ms:.2f} ms per call; each call's work takes "
            f"{work_ms:.0f} ms. Divide the time of the timed calls by their number, repeats."
        )
    return ms, work_ms


# The machines the check fakes: (name, NVIDIA GPUs, an Apple GPU, a PyTorch built with MPS
# (torch.backends.mps.is_built()), the answer). Only machines that exist: a Mac has no CUDA, and
# a machine with NVIDIA GPUs no MPS.
_MACHINES = [
    ("an NVIDIA GPU", 1, False, False, "cuda"),
    ("two NVIDIA GPUs", 2, False, False, "cuda"),
    ("an Apple GPU", 0, True, True, "mps"),
    ("no GPU at all", 0, False, False, "cpu"),
    ("no usable GPU, with a PyTorch built for Apple GPUs", 0, False, True, "cpu"),
]


def _fake_machine(stack: contextlib.ExitStack, gpus: int, mps: bool, built: bool) -> None:
    """Patch every PyTorch call that tells which accelerator a machine has, so that each gives
    the same answer: CUDA's, MPS's (both its modules) and torch.accelerator's."""
    kind = "cuda" if gpus else "mps" if mps else None
    answers = [
        (torch.cuda, "is_available", gpus > 0),
        (torch.cuda, "device_count", gpus),
        (torch.cuda, "is_initialized", False),
        (torch.backends.mps, "is_available", mps),
        (torch.backends.mps, "is_built", built),
        (getattr(torch, "mps", None), "is_available", mps),
        (getattr(torch, "mps", None), "device_count", int(mps)),
        (getattr(torch, "accelerator", None), "is_available", kind is not None),
        (getattr(torch, "accelerator", None), "device_count", gpus or int(mps)),
        (
            getattr(torch, "accelerator", None),
            "current_accelerator",
            torch.device(kind) if kind else None,
        ),
    ]
    for owner, name, value in answers:
        if owner is not None and hasattr(owner, name):
            stack.enter_context(mock.patch.object(owner, name, return_value=value))


def _check_choose_device(choose_device: Any) -> str:
    for machine, gpus, mps, built, expected in _MACHINES:
        with contextlib.ExitStack() as stack:
            _fake_machine(stack, gpus, mps, built)
            got = run_learner("choose_device", choose_device)
        try:
            kind = torch.device(got).type
        except (TypeError, RuntimeError):
            raise NotYet(
                f"choose_device returned {short(got)}; return a torch.device or a name like 'cpu'."
            ) from None
        if kind != expected:
            raise NotYet(f"on a machine with {machine} you chose {kind!r}; expected {expected!r}.")
    return "'cuda' with NVIDIA GPUs, 'mps' on an Apple GPU, else 'cpu'."


q1 = Exercise(
    "q1: model and batch to the device",
    _check_to_device,
    hint="""
        model.to(device) moves the module's parameters in place (and returns it), but
        tensor.to(device) returns a new tensor: assign it.
    """,
    solution="""
        def to_device(model, images, labels, device):
            model = model.to(device)
            images = images.to(device)
            labels = labels.to(device)
            return model, images, labels
    """,
)

q2 = Exercise(
    "q2: time a GPU operation correctly",
    _check_time_op,
    hint="""
        Two things must not be inside the timed stretch: the first calls' one-off costs, and
        work still queued from before. And the clock must not stop while work is still queued.
        Which call makes the host wait for the device?
    """,
    solution="""
        def time_op(run, sync, warmup=3, repeats=10):
            for _ in range(warmup):
                run()
            sync()
            start = time.perf_counter()
            for _ in range(repeats):
                run()
            sync()
            return (time.perf_counter() - start) / repeats
    """,
)

q3 = Exercise(
    "q3: choose the device",
    _check_choose_device,
    hint="""
        torch.cuda.is_available() for NVIDIA, torch.backends.mps.is_available() for Apple
        silicon, and the CPU otherwise.
    """,
    solution="""
        def choose_device():
            if torch.cuda.is_available():
                return torch.device("cuda")
            if torch.backends.mps.is_available():
                return torch.device("mps")
            return torch.device("cpu")
    """,
)
