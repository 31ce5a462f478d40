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

from ..i18n import say
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
                say(
                    f"return one averaged tensor per parameter, {len(whole)} in all; you returned "
                    f"{short(got)}.",
                    f"应为每个参数返回一个平均后的张量，共 {len(whole)} 个；"
                    f"你返回的是 {short(got)}。",
                )
            )
        for i, (mine, want) in enumerate(zip(got, whole, strict=True)):
            if not isinstance(mine, torch.Tensor) or mine.shape != want.shape:
                raise NotYet(
                    say(
                        f"tensor {i} should have the shape {list(want.shape)} of parameter {i}.",
                        f"张量 {i} 的形状应为参数 {i} 的形状 {list(want.shape)}。",
                    )
                )
            if torch.allclose(mine, want * world, atol=1e-5):
                raise NotYet(
                    say(
                        f"with {world} processes your gradient is {world} times the whole "
                        "batch's: an all-reduce sums; divide by the number of processes.",
                        f"有 {world} 个进程时，你的梯度是整个批量梯度的 {world} 倍："
                        "all-reduce 做的是求和；请再除以进程数。",
                    )
                )
            if not torch.allclose(mine, want, atol=1e-5):
                raise NotYet(
                    say(
                        f"with {world} processes, parameter {i}'s averaged gradient differs from "
                        "the gradient of the whole batch.",
                        f"有 {world} 个进程时，参数 {i} 的平均梯度与整个批量的梯度不同。",
                    )
                )
    return say(
        "the mean of the processes' gradients equals the whole batch's gradient, with 2 and 3 "
        "processes: what DDP's all-reduce gives every process.",
        "无论是 2 个还是 3 个进程，各进程梯度的平均值都等于整个批量的梯度："
        "这正是 DDP 的 all-reduce 交给每个进程的结果。",
    )


def _index(value: Any) -> int:
    """One index of a share, if it is a whole number (an int, a NumPy integer or an integer
    tensor of one element); else ``NotYet``."""
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.is_floating_point():
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise NotYet(
            say(
                f"each share should be a list of indices (ints); one holds {short(value)}.",
                f"每一份都应当是一个索引（int）列表；其中一份含有 {short(value)}。",
            )
        )
    return int(value)


def _as_lists(got: Any) -> list[list[int]]:
    """A learner's shares as lists of ints (they may be lists, tuples or tensors)."""
    try:
        return [[_index(i) for i in share] for share in got]
    except TypeError:
        raise NotYet(
            say(
                "each share should be a list of indices (ints).",
                "每一份都应当是一个索引（int）列表。",
            )
        ) from None


def _check_shares(shares: Any) -> str:
    for n, world in ((10, 2), (10, 3), (7, 4)):
        orders = {}
        for epoch in (0, 1):
            got = run_learner("shares", shares, n, world, epoch, 0)
            if isinstance(got, torch.Tensor) and got.dim() == 2:  # one row per process
                got = list(got)
            if not isinstance(got, list | tuple) or len(got) != world:
                raise NotYet(
                    say(
                        f"for {world} processes return {world} lists; you returned {short(got)}.",
                        f"有 {world} 个进程时应返回 {world} 个列表；你返回的是 {short(got)}。",
                    )
                )
            lists = _as_lists(got)
            if _as_lists(run_learner("shares", shares, n, world, epoch, 0)) != lists:
                raise NotYet(
                    say(
                        "two calls with the same arguments gave different shares: every process "
                        "must compute the same shuffle, so seed it.",
                        "用相同的参数调用两次，得到的分法却不同：每个进程都必须算出相同的打乱顺序，"
                        "所以要为它设定随机种子。",
                    )
                )
            sizes = [len(share) for share in lists]
            if len(set(sizes)) != 1:
                raise NotYet(
                    say(
                        f"for {n} images and {world} processes the shares hold {sizes} images: "
                        "each process must take the same number of steps, or the all-reduce waits "
                        "for good. Repeat a few indices so that they are equal, as "
                        "DistributedSampler does.",
                        f"{n} 张图像、{world} 个进程时，各份分别有 {sizes} 张图像："
                        "每个进程必须走相同的步数，否则 all-reduce 会永远等下去。"
                        "请像 DistributedSampler 那样重复几个索引，使各份一样多。",
                    )
                )
            covered = set().union(*lists)
            outside = sorted(i for i in covered if not 0 <= i < n)
            if outside:
                raise NotYet(
                    say(
                        f"for {n} images and {world} processes a share holds index {outside[0]}, "
                        f"outside 0..{n - 1}: pad by repeating indices from the start of the "
                        "order.",
                        f"{n} 张图像、{world} 个进程时，有一份含有索引 {outside[0]}，"
                        f"超出了 0..{n - 1}：请重复打乱后的顺序中开头的那几个索引来补齐。",
                    )
                )
            if covered != set(range(n)):
                missing = sorted(set(range(n)) - covered)
                raise NotYet(
                    say(
                        f"for {n} images and {world} processes no share holds {missing}: when n "
                        "does not divide evenly, repeat indices from the start rather than drop "
                        "any.",
                        f"{n} 张图像、{world} 个进程时，没有哪一份含有 {missing}："
                        "当 n 不能均分时，请重复开头的索引，而不要丢掉任何索引。",
                    )
                )
            repeated = sum(sizes) - n
            if repeated >= world:
                raise NotYet(
                    say(
                        f"for {n} images and {world} processes {repeated} indices are read "
                        f"twice; at most {world - 1} need to be.",
                        f"{n} 张图像、{world} 个进程时，有 {repeated} 个索引被读了两次；"
                        f"最多只需要 {world - 1} 个。",
                    )
                )
            orders[epoch] = lists
        if orders[0] == orders[1]:
            raise NotYet(
                say(
                    "epoch 0 and epoch 1 share the data in the same order: make the shuffle "
                    "depend on the epoch as well as the seed.",
                    "第 0 轮和第 1 轮以相同的顺序分配数据：请让打乱顺序既取决于随机种子，"
                    "也取决于轮次。",
                )
            )
        if _as_lists(run_learner("shares", shares, n, world, 0, 1)) == orders[0]:
            raise NotYet(
                say(
                    "seed 0 and seed 1 share the data in the same order: make the shuffle depend "
                    "on the seed as well as the epoch, so that a run with another seed sees "
                    "other orders.",
                    "随机种子 0 和随机种子 1 以相同的顺序分配数据：请让打乱顺序既取决于轮次，"
                    "也取决于随机种子，这样换一个随机种子的运行就会看到别的顺序。",
                )
            )
    sampler = DistributedSampler(range(10), num_replicas=2, rank=0, shuffle=True, seed=0)
    sampler.set_epoch(0)
    same = _as_lists(run_learner("shares", shares, 10, 2, 0, 0))[0] == list(sampler)
    also = (
        say(" (and exactly DistributedSampler's)", "（而且与 DistributedSampler 的完全一致）")
        if same
        else ""
    )
    return say(
        f"equal shares that cover every image, a new order each epoch, the same on every "
        f"call{also}.",
        f"各份一样多并覆盖了每一张图像，每一轮的顺序都不同，每次调用的结果都相同{also}。",
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
                raise NotYet(
                    say(
                        f"rank {rank} wrote a checkpoint too: only rank 0 should save.",
                        f"rank {rank} 也写了检查点：只有 rank 0 应当保存。",
                    )
                )
        path = Path(folder) / "checkpoint_from_rank_0.pt"
        if not path.exists():
            raise NotYet(
                say(
                    "rank 0 wrote nothing at the path it was given.",
                    "rank 0 没有在交给它的路径上写入任何东西。",
                )
            )
        try:
            state = torch.load(path, weights_only=True)
        except Exception:
            raise NotYet(
                say(
                    "the file does not load with weights_only=True: save a state_dict, not the "
                    "model.",
                    "这个文件无法用 weights_only=True 加载：请保存 state_dict（状态字典），"
                    "而不是整个模型。",
                )
            ) from None
    if not isinstance(state, dict):
        raise NotYet(
            say(
                f"the file holds {type(state).__name__}; save model.module.state_dict().",
                f"文件里保存的是 {type(state).__name__}；请保存 model.module.state_dict()。",
            )
        )
    if any(str(k).startswith("module.") for k in state):
        raise NotYet(
            say(
                "the keys start with 'module.' (module.conv1.weight, ...), so a plain LessonNet "
                "cannot load them: save the wrapped network's own state_dict, "
                "model.module.state_dict().",
                "键以 'module.' 开头（module.conv1.weight, ...），所以普通的 LessonNet "
                "无法加载它们：请保存被包装的网络自己的 state_dict，即 model.module.state_dict()。",
            )
        )
    net = LessonNet()
    try:
        net.load_state_dict(state)
    except RuntimeError:
        raise NotYet(
            say(
                "a plain LessonNet cannot load the file: save model.module.state_dict().",
                "普通的 LessonNet 无法加载这个文件：请保存 model.module.state_dict()。",
            )
        ) from None
    return say(
        "rank 0 alone saves, and a plain LessonNet loads its file as it is.",
        "只有 rank 0 保存，而且普通的 LessonNet 能原样加载它的文件。",
    )


q1 = Exercise(
    ("q1: what the all-reduce computes", "q1：all-reduce 计算的是什么"),
    _check_average_gradients,
    hint=(
        """
        Work parameter by parameter: zip(*per_process) lines up each parameter's gradients from
        all the processes. What single tensor should every process end up holding?
        """,
        "逐个参数地处理：zip(*per_process) 把每个参数在所有进程上的梯度排在一起。"
        "每个进程最后应当持有的是哪一个张量？",
    ),
    solution="""
        def average_gradients(per_process):
            world = len(per_process)
            return [sum(grads) / world for grads in zip(*per_process)]
        """,
)

q2 = Exercise(
    ("q2: sharing an epoch between processes", "q2：在进程之间分配一轮的数据"),
    _check_shares,
    hint=(
        """
        Three requirements: every process computes the same shuffle (seeded, and with what, so
        that it changes each epoch?), every process gets as many indices as the others, and
        together they cover all n. DistributedSampler hands process r every world_size-th index,
        starting at r.
        """,
        "三个要求：每个进程算出相同的打乱顺序（要设定随机种子；用什么作种子，"
        "才能让它每一轮都变化？），每个进程分到的索引和其他进程一样多，"
        "并且它们合起来覆盖全部 n 个索引。DistributedSampler 从位置 r 开始，"
        "每 world_size 个索引取一个，交给进程 r。",
    ),
    solution=(
        """
        def shares(n, world_size, epoch, seed):
            generator = torch.Generator().manual_seed(seed + epoch)
            order = torch.randperm(n, generator=generator).tolist()
            total = -(-n // world_size) * world_size  # n rounded up to a multiple
            order += order[: total - n]
            return [order[rank::world_size] for rank in range(world_size)]
        """,
        """
        def shares(n, world_size, epoch, seed):
            generator = torch.Generator().manual_seed(seed + epoch)
            order = torch.randperm(n, generator=generator).tolist()
            total = -(-n // world_size) * world_size  # 把 n 向上取整为 world_size 的倍数
            order += order[: total - n]
            return [order[rank::world_size] for rank in range(world_size)]
        """,
    ),
)

q3 = Exercise(
    ("q3: rank 0 saves the plain model", "q3：rank 0 保存普通模型"),
    _check_save_checkpoint,
    hint=(
        """
        Every process calls the function; only one may write. And the DDP wrapper's state_dict
        names every tensor module.something: the network inside it is model.module.
        """,
        "每个进程都会调用这个函数；只有一个进程可以写入。另外，DDP 包装的 state_dict "
        "把每个张量都命名为 module.xxx：包在里面的网络是 model.module。",
    ),
    solution="""
        def save_checkpoint(model, path, rank):
            if rank == 0:
                torch.save(model.module.state_dict(), path)
        """,
)
