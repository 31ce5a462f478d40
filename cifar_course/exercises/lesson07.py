"""Exercises for lesson 07, several processes with DistributedDataParallel: what the all-reduce
computes, how an epoch is shared between processes, and which process saves what.

They run in one process, without torchrun: the checks hand your code what each process would
hold, and compare what it does with what PyTorch's distributed engine does.
"""

from __future__ import annotations

import numbers
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data.distributed import DistributedSampler

from ..models import LessonNet
from . import Exercise, NotYet, ____, run_learner, short

__all__ = ["____", "q1", "q2", "q3", "Replica"]


def _gradients(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> list[torch.Tensor]:
    model.zero_grad()
    nn.functional.cross_entropy(model(images), labels).backward()
    return [p.grad.clone() for p in model.parameters()]


def _check_average_gradients(average_gradients: Any) -> str:
    torch.manual_seed(0)
    model = LessonNet()
    images, labels = torch.rand(12, 3, 32, 32), torch.randint(0, 10, (12,))
    whole = _gradients(model, images, labels)
    for world in (2, 3):
        per_process = [_gradients(model, images[r::world], labels[r::world]) for r in range(world)]
        got = run_learner("average_gradients", average_gradients, [list(g) for g in per_process])
        if not isinstance(got, list | tuple) or len(got) != len(whole):
            raise NotYet(
                f"return one averaged tensor per parameter, {len(whole)} in all; you returned "
                f"{short(got)}."
            )
        for i, (mine, want) in enumerate(zip(got, whole, strict=True)):
            if not isinstance(mine, torch.Tensor) or mine.shape != want.shape:
                raise NotYet(
                    f"tensor {i} should have the shape {list(want.shape)} of parameter {i}."
                )
            if torch.allclose(mine, want * world, atol=1e-5):
                raise NotYet(
                    f"with {world} processes your gradient is {world} times the whole batch's: "
                    "an all-reduce sums; divide by the number of processes."
                )
            if not torch.allclose(mine, want, atol=1e-5):
                raise NotYet(
                    f"with {world} processes, parameter {i}'s averaged gradient differs from the "
                    "gradient of the whole batch."
                )
    return (
        "the mean of the processes' gradients equals the whole batch's gradient, with 2 and 3 "
        "processes: what DDP's all-reduce gives every process."
    )


def _index(value: Any) -> int:
    """One index of a share, if it is a whole number (an int, a NumPy integer or an integer
    tensor of one element); else ``NotYet``."""
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.is_floating_point():
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise NotYet(f"each share should be a list of indices (ints); one holds {short(value)}.")
    return int(value)


def _as_lists(got: Any) -> list[list[int]]:
    """A learner's shares as lists of ints (they may be lists, tuples or tensors)."""
    try:
        return [[_index(i) for i in share] for share in got]
    except TypeError:
        raise NotYet("each share should be a list of indices (ints).") from None


def _check_shares(shares: Any) -> str:
    for n, world in ((10, 2), (10, 3), (7, 4)):
        orders = {}
        for epoch in (0, 1):
            got = run_learner("shares", shares, n, world, epoch, 0)
            if isinstance(got, torch.Tensor) and got.dim() == 2:  # one row per process
                got = list(got)
            if not isinstance(got, list | tuple) or len(got) != world:
                raise NotYet(
                    f"for {world} processes return {world} lists; you returned {short(got)}."
                )
            lists = _as_lists(got)
            if _as_lists(run_learner("shares", shares, n, world, epoch, 0)) != lists:
                raise NotYet(
                    "two calls with the same arguments gave different shares: every process "
                    "must compute the same shuffle, so seed it."
                )
            sizes = [len(share) for share in lists]
            if len(set(sizes)) != 1:
                raise NotYet(
                    f"for {n} images and {world} processes the shares hold {sizes} images: each "
                    "process must take the same number of steps, or the all-reduce waits for good. "
                    "Repeat a few indices so that they are equal, as DistributedSampler does."
                )
            covered = set().union(*lists)
            outside = sorted(i for i in covered if not 0 <= i < n)
            if outside:
                raise NotYet(
                    f"for {n} images and {world} processes a share holds index {outside[0]}, "
                    f"outside 0..{n - 1}: pad by repeating indices from the start of the order."
                )
            if covered != set(range(n)):
                missing = sorted(set(range(n)) - covered)
                raise NotYet(
                    f"for {n} images and {world} processes no share holds {missing}: when n "
                    "does not divide evenly, repeat indices from the start rather than drop any."
                )
            repeated = sum(sizes) - n
            if repeated >= world:
                raise NotYet(
                    f"for {n} images and {world} processes {repeated} indices are read twice; "
                    f"at most {world - 1} need to be."
                )
            orders[epoch] = lists
        if orders[0] == orders[1]:
            raise NotYet(
                "epoch 0 and epoch 1 share the data in the same order: make the shuffle depend on "
                "the epoch as well as the seed."
            )
        if _as_lists(run_learner("shares", shares, n, world, 0, 1)) == orders[0]:
            raise NotYet(
                "seed 0 and seed 1 share the data in the same order: make the shuffle depend on "
                "the seed as well as the epoch, so that a run with another seed sees other orders."
            )
    sampler = DistributedSampler(range(10), num_replicas=2, rank=0, shuffle=True, seed=0)
    sampler.set_epoch(0)
    same = _as_lists(run_learner("shares", shares, 10, 2, 0, 0))[0] == list(sampler)
    also = " (and exactly DistributedSampler's)" if same else ""
    return (
        "equal shares that cover every image, a new order each epoch, the same on every "
        f"call{also}."
    )


class Replica(nn.Module):
    """Stands in for ``DistributedDataParallel(model)``: the same ``.module`` and the same
    ``module.``-prefixed ``state_dict`` keys, without a process group."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x)


def _check_save_checkpoint(save_checkpoint: Any) -> str:
    torch.manual_seed(0)
    model = Replica(LessonNet())
    with tempfile.TemporaryDirectory() as folder:
        for rank in (1, 2, 0):
            path = Path(folder) / f"checkpoint_from_rank_{rank}.pt"
            run_learner("save_checkpoint", save_checkpoint, model, path, rank)
            if rank != 0 and path.exists():
                raise NotYet(f"rank {rank} wrote a checkpoint too: only rank 0 should save.")
        path = Path(folder) / "checkpoint_from_rank_0.pt"
        if not path.exists():
            raise NotYet("rank 0 wrote nothing at the path it was given.")
        try:
            state = torch.load(path, weights_only=True)
        except Exception:
            raise NotYet(
                "the file does not load with weights_only=True: save a state_dict, not the model."
            ) from None
    if not isinstance(state, dict):
        raise NotYet(f"the file holds {type(state).__name__}; save model.module.state_dict().")
    if any(str(k).startswith("module.") for k in state):
        raise NotYet(
            "the keys start with 'module.' (module.conv1.weight, ...), so a plain LessonNet "
            "cannot load them: save the wrapped network's own state_dict, "
            "model.module.state_dict()."
        )
    net = LessonNet()
    try:
        net.load_state_dict(state)
    except RuntimeError:
        raise NotYet(
            "a plain LessonNet cannot load the file: save model.module.state_dict()."
        ) from None
    return "rank 0 alone saves, and a plain LessonNet loads its file as it is."


q1 = Exercise(
    "q1: what the all-reduce computes",
    _check_average_gradients,
    hint="""
        Work parameter by parameter: zip(*per_process) lines up each parameter's gradients from
        all the processes. What single tensor should every process end up holding?
    """,
    solution="""
        def average_gradients(per_process):
            world = len(per_process)
            return [sum(grads) / world for grads in zip(*per_process)]
    """,
)

q2 = Exercise(
    "q2: sharing an epoch between processes",
    _check_shares,
    hint="""
        Three requirements: every process computes the same shuffle (seeded, and with what, so
        that it changes each epoch?), every process gets as many indices as the others, and
        together they cover all n. DistributedSampler hands process r every world_size-th index,
        starting at r.
    """,
    solution="""
        def shares(n, world_size, epoch, seed):
            generator = torch.Generator().manual_seed(seed + epoch)
            order = torch.randperm(n, generator=generator).tolist()
            total = -(-n // world_size) * world_size  # n rounded up to a multiple
            order += order[: total - n]
            return [order[rank::world_size] for rank in range(world_size)]
    """,
)

q3 = Exercise(
    "q3: rank 0 saves the plain model",
    _check_save_checkpoint,
    hint="""
        Every process calls the function; only one may write. And the DDP wrapper's state_dict
        names every tensor module.something: the network inside it is model.module.
    """,
    solution="""
        def save_checkpoint(model, path, rank):
            if rank == 0:
                torch.save(model.module.state_dict(), path)
    """,
)
