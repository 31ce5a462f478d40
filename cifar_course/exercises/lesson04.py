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


def _check_to_device(to_device: Any) -> str:
    for target in ("meta", "cpu"):
        model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.LazyLinear(10))
        model(torch.zeros(1, 3, 8, 8))
        images, labels = torch.rand(4, 3, 8, 8), torch.tensor([1, 2, 3, 4])
        result = run_learner("to_device", to_device, model, images, labels, torch.device(target))
        if not isinstance(result, tuple | list) or len(result) != 3:
            raise NotYet("to_device should return three things, as a tuple: model, images, labels.")
        model, images, labels = result
        if not isinstance(model, nn.Module):
            raise NotYet(
                f"the first thing returned should be the model; it is {type(model).__name__}."
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
        stray = [n for n, p in model.named_parameters() if p.device.type != target]
        if stray:
            raise NotYet(
                f"the model's {stray[0]} is still on {model.get_parameter(stray[0]).device}, "
                f"not {target}."
            )
    return (
        "model, images and labels all arrive on the device asked for (checked with 'meta' and "
        "'cpu')."
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
    warmup, repeats = 3, 10
    gpu = SimulatedGPU()
    got = run_learner("time_op", time_op, gpu.run, gpu.sync, warmup=warmup, repeats=repeats)
    seconds = as_number(got, "time_op", "the seconds per call, one number")
    runs = gpu.log.count("run")
    ms, work_ms = seconds * 1000, gpu.work * 1000
    if runs != warmup + repeats:
        raise NotYet(
            f"run was called {runs} times; expected {warmup} warm-up calls and {repeats} timed "
            "ones."
        )
    run_at = [i for i, event in enumerate(gpu.log) if event == "run"]
    if "sync" not in gpu.log[run_at[warmup - 1] : run_at[warmup]]:
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
    if not 0.95 * work_ms <= ms <= 1.75 * work_ms:
        raise NotYet(
            f"you measured {ms:.2f} ms per call; each call's work takes {work_ms:.0f} ms. Divide "
            "the time of the timed calls by their number, repeats."
        )
    return (
        f"{ms:.2f} ms per call, for work of {work_ms:.0f} ms: warm-up excluded, and synchronized "
        "before both readings of the clock."
    )


def _check_choose_device(choose_device: Any) -> str:
    cases = [((True, 1), True, "cuda"), ((False, 0), True, "mps"), ((False, 0), False, "cpu")]
    for (cuda, count), mps, expected in cases:
        accelerator = torch.device("cuda" if cuda else "mps") if cuda or mps else None
        with contextlib.ExitStack() as machine:
            for owner, name, value in [
                (torch.cuda, "is_available", cuda),
                (torch.cuda, "device_count", count),
                (torch.backends.mps, "is_available", mps),
                (torch.backends.mps, "is_built", mps),
                # PyTorch 2.6's torch.accelerator answers the same question
                (getattr(torch, "accelerator", None), "is_available", cuda or mps),
                (getattr(torch, "accelerator", None), "current_accelerator", accelerator),
            ]:
                if owner is not None and hasattr(owner, name):
                    machine.enter_context(mock.patch.object(owner, name, return_value=value))
            got = run_learner("choose_device", choose_device)
        try:
            kind = torch.device(got).type
        except (TypeError, RuntimeError):
            raise NotYet(
                f"choose_device returned {short(got)}; return a torch.device or a name like 'cpu'."
            ) from None
        machine = (
            "an NVIDIA GPU"
            if cuda
            else "an Apple GPU and no NVIDIA one"
            if mps
            else "no GPU at all"
        )
        if kind != expected:
            raise NotYet(f"on a machine with {machine} you chose {kind!r}; expected {expected!r}.")
    return "'cuda' with an NVIDIA GPU, 'mps' on an Apple GPU, else 'cpu'."


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
