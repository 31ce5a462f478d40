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

from ..i18n import say
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
        raise NotYet(
            say(
                "to_device should return three things, as a tuple: model, images, labels.",
                "to_device 应当以元组的形式返回三样东西：model、images、labels。",
            )
        )
    model, images, labels = result
    if not isinstance(model, nn.Module):
        raise NotYet(
            say(
                f"the first thing returned should be the model; it is {type(model).__name__}.",
                f"返回的第一样东西应当是模型；它却是 {type(model).__name__}。",
            )
        )
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
                say(
                    f"{name} is not the tensor that {name}.to(device) returned: Tensor.to returns "
                    f"a new tensor and leaves the old one where it was, so write {name} = "
                    f"{name}.to(device).",
                    f"{name} 不是 {name}.to(device) 返回的那个张量：Tensor.to 返回一个新张量，"
                    f"原来的张量留在原处，所以要写 {name} = {name}.to(device)。",
                )
            )
    stray = [n for n, p in got_model.named_parameters() if p.data_ptr() not in copies]
    if stray:
        raise NotYet(
            say(
                f"the model's {stray[0]} was not moved to the device.",
                f"模型的 {stray[0]} 没有移到设备上。",
            )
        )


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
                say(
                    "asked for the device 'meta', everything stayed on the CPU: move to the "
                    "device you are given, the argument device, not one your function picks.",
                    "要求的设备是 'meta'，所有东西却都留在了 CPU 上：要移到给你的那个设备，"
                    "也就是参数 device，而不是你的函数自己选的设备。",
                )
            )
        for name, value in (("images", images), ("labels", labels)):
            if not isinstance(value, torch.Tensor):
                raise NotYet(
                    say(
                        f"{name} came back as {type(value).__name__}, not a tensor.",
                        f"返回的 {name} 是 {type(value).__name__}，不是张量。",
                    )
                )
            if value.device.type != target:
                raise NotYet(
                    say(
                        f"{name} is still on {_where(value)}, not {target}: Tensor.to returns a "
                        f"new tensor and leaves the old one where it was, so write {name} = "
                        f"{name}.to(device).",
                        f"{name} 仍在 {_where(value)} 上，而不在 {target} 上：Tensor.to "
                        f"返回一个新张量，原来的张量留在原处，所以要写 {name} = "
                        f"{name}.to(device)。",
                    )
                )
        if labels.dtype != torch.long:
            raise NotYet(
                say(
                    f"labels became {labels.dtype}; move them with .to(device) alone, keeping "
                    "torch.long.",
                    f"labels 变成了 {labels.dtype}；只用 .to(device) 移动它们，保持 torch.long。",
                )
            )
        if images.dtype != torch.float32:
            raise NotYet(
                say(
                    f"images became {images.dtype}; move them with .to(device) alone: the "
                    "model's weights are float32, and so must its input be.",
                    f"images 变成了 {images.dtype}；只用 .to(device) 移动它们："
                    "模型的权重是 float32，它的输入也必须是 float32。",
                )
            )
        other = [p.dtype for p in model.parameters() if p.dtype != torch.float32]
        if other:
            raise NotYet(
                say(
                    f"the model's weights became {other[0]}; move it with .to(device) alone, "
                    "keeping float32 like its input.",
                    f"模型的权重变成了 {other[0]}；只用 .to(device) 移动模型，"
                    "像它的输入一样保持 float32。",
                )
            )
        stray = [n for n, p in model.named_parameters() if p.device.type != target]
        if stray:
            raise NotYet(
                say(
                    f"the model's {stray[0]} is still on {model.get_parameter(stray[0]).device}, "
                    f"not {target}.",
                    f"模型的 {stray[0]} 仍在 {model.get_parameter(stray[0]).device} 上，"
                    f"而不在 {target} 上。",
                )
            )
        if target == "cpu":
            changed = [k for k, v in model.state_dict().items() if not torch.equal(v, weights[k])]
            if changed:
                raise NotYet(
                    say(
                        f"the model's {changed[0]} holds other values after the move: moving "
                        "must keep the weights (to_empty gives new, uninitialized memory); use "
                        "model.to(device).",
                        f"移动之后，模型的 {changed[0]} 存的是别的值：移动必须保留权重"
                        "（to_empty 给出的是未初始化的新内存）；请用 model.to(device)。",
                    )
                )
    return say(
        "model, images and labels all arrive on the device asked for (checked with 'meta' and "
        "'cpu'), the weights unchanged.",
        "model、images 和 labels 都到了要求的设备上（用 'meta' 和 'cpu' 检查过），权重没有改变。",
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
    return say(
        f"{ms:.2f} ms per call, for work of {work_ms:.0f} ms: warm-up excluded, and synchronized "
        "before both readings of the clock, whatever the counts of warm-up and timed calls.",
        f"每次调用 {ms:.2f} ms，工作本身为 {work_ms:.0f} ms：预热不计在内，两次读时钟之前都做了"
        "同步，无论预热调用和计时调用各有多少次。",
    )


def _time_op_once(time_op: Any, warmup: int, repeats: int) -> tuple[float, float]:
    """Time a fresh ``SimulatedGPU`` with the learner's ``time_op``; its ms and the work's ms."""
    gpu = SimulatedGPU()
    got = run_learner("time_op", time_op, gpu.run, gpu.sync, warmup=warmup, repeats=repeats)
    seconds = as_number(
        got, "time_op", say("the seconds per call, one number", "每次调用的秒数（一个数）")
    )
    runs = gpu.log.count("run")
    ms, work_ms = seconds * 1000, gpu.work * 1000
    counts = f"warmup={warmup}, repeats={repeats}"
    if runs != warmup + repeats:
        raise NotYet(
            say(
                f"with {counts}, run was called {runs} times; expected {warmup} warm-up calls and "
                f"{repeats} timed ones: use the arguments, not fixed numbers.",
                f"在 {counts} 时，run 被调用了 {runs} 次；应当是 {warmup} 次预热调用和 "
                f"{repeats} 次计时调用：请使用参数，而不是固定的数字。",
            )
        )
    run_at = [i for i, event in enumerate(gpu.log) if event == "run"]
    if warmup and "sync" not in gpu.log[run_at[warmup - 1] : run_at[warmup]]:
        raise NotYet(
            say(
                f"nothing waits for the {warmup} warm-up calls to finish before the timed calls: "
                "call sync() after the warm-up, then start the clock.",
                f"在计时调用开始之前，没有任何调用等待那 {warmup} 次预热调用完成："
                "请在预热之后调用 sync()，然后再开始计时。",
            )
        )
    if gpu.log[-1] != "sync" or ms < 0.5 * work_ms:
        raise NotYet(
            say(
                f"you measured {ms:.2f} ms per call, but each call keeps the GPU busy for "
                f"{work_ms:.0f} ms: the clock stopped before the work finished. Call sync(), "
                "then read the clock.",
                f"你测得每次调用 {ms:.2f} ms，但每次调用都让 GPU 忙 {work_ms:.0f} ms："
                "工作还没完成，时钟就停了。先调用 sync()，再读时钟。",
            )
        )
    if abs(ms / 1000 - work_ms) < 0.5 * work_ms:
        raise NotYet(
            say(
                f"you return {seconds:.4g}: that looks like milliseconds; return seconds.",
                f"你返回的是 {seconds:.4g}：这看起来是毫秒；请返回秒。",
            )
        )
    if abs(ms - work_ms * repeats) < abs(ms - work_ms):
        raise NotYet(
            say(
                f"you return {ms:.1f} ms, the time of all {repeats} calls; divide by repeats.",
                f"你返回的是 {ms:.1f} ms，这是全部 {repeats} 次调用的时间；请除以 repeats。",
            )
        )
    everything = (gpu.first_call * 1000 + (warmup + repeats) * work_ms) / repeats
    if abs(ms - everything) < abs(ms - work_ms):
        raise NotYet(
            say(
                f"you measured {ms:.2f} ms per call, about the warm-up and the timed calls "
                f"together ({everything:.1f} ms) over {repeats}: the clock started before the "
                "warm-up. Start it after the warm-up and its sync().",
                f"你测得每次调用 {ms:.2f} ms，约等于预热调用和计时调用的总时间除以 {repeats}"
                f"（{everything:.1f} ms）：时钟在预热之前就开始了。请在预热及其 sync() "
                "之后再开始计时。",
            )
        )
    # with few timed calls, dividing by one call too few is far off (5.3 ms for 4 with 4 calls);
    # with many, too close to tell from a busy machine's own delays
    one_less = work_ms * repeats / (repeats - 1) if repeats > 1 else float("inf")
    if repeats <= 4 and abs(ms - one_less) < abs(ms - work_ms):
        raise NotYet(
            say(
                f"with {counts} you return {ms:.2f} ms per call for {work_ms:.0f} ms of work: "
                f"that is the time of {repeats} calls divided by {repeats - 1}; divide by "
                "repeats.",
                f"在 {counts} 时，每次调用的工作是 {work_ms:.0f} ms，你返回的却是每次调用 "
                f"{ms:.2f} ms：这是 {repeats} 次调用的时间除以 {repeats - 1}；请除以 repeats。",
            )
        )
    if not 0.95 * work_ms <= ms <= 1.75 * work_ms:
        raise NotYet(
            say(
                f"with {counts} you measured {ms:.2f} ms per call; each call's work takes "
                f"{work_ms:.0f} ms. Divide the time of the timed calls by their number, repeats.",
                f"在 {counts} 时，你测得每次调用 {ms:.2f} ms；而每次调用的工作需要 "
                f"{work_ms:.0f} ms。请把计时调用的总时间除以它们的次数 repeats。",
            )
        )
    return ms, work_ms


def _machines() -> list[tuple[str, int, bool, bool, str]]:
    """The machines the check fakes: (name, NVIDIA GPUs, an Apple GPU, a PyTorch built with MPS
    (torch.backends.mps.is_built()), the answer). Only machines that exist: a Mac has no CUDA, and
    a machine with NVIDIA GPUs no MPS. A function, so that each name is in the language set when
    the check runs."""
    return [
        (say("an NVIDIA GPU", "有一块 NVIDIA GPU"), 1, False, False, "cuda"),
        (say("two NVIDIA GPUs", "有两块 NVIDIA GPU"), 2, False, False, "cuda"),
        (say("an Apple GPU", "有一块 Apple GPU"), 0, True, True, "mps"),
        (say("no GPU at all", "完全没有 GPU"), 0, False, False, "cpu"),
        (
            say(
                "no usable GPU, with a PyTorch built for Apple GPUs",
                "没有可用的 GPU，却安装了为 Apple GPU 构建的 PyTorch",
            ),
            0,
            False,
            True,
            "cpu",
        ),
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
    for machine, gpus, mps, built, expected in _machines():
        with contextlib.ExitStack() as stack:
            _fake_machine(stack, gpus, mps, built)
            got = run_learner("choose_device", choose_device)
        try:
            kind = torch.device(got).type
        except (TypeError, RuntimeError):
            raise NotYet(
                say(
                    f"choose_device returned {short(got)}; return a torch.device or a name like "
                    "'cpu'.",
                    f"choose_device 返回了 {short(got)}；请返回一个 torch.device，"
                    "或者像 'cpu' 这样的设备名。",
                )
            ) from None
        if kind != expected:
            raise NotYet(
                say(
                    f"on a machine with {machine} you chose {kind!r}; expected {expected!r}.",
                    f"当机器上{machine} 时，你选了 {kind!r}；应当选 {expected!r}。",
                )
            )
    return say(
        "'cuda' with NVIDIA GPUs, 'mps' on an Apple GPU, else 'cpu'.",
        "有 NVIDIA GPU 时选 'cuda'，有 Apple GPU 时选 'mps'，否则选 'cpu'。",
    )


q1 = Exercise(
    ("q1: model and batch to the device", "q1：把模型和批量移到设备上"),
    _check_to_device,
    hint=(
        """
        model.to(device) moves the module's parameters in place (and returns it), but
        tensor.to(device) returns a new tensor: assign it.
        """,
        "model.to(device) 原地移动模块的参数（并返回这个模块），"
        "而 tensor.to(device) 返回一个新张量：要把它赋值给变量。",
    ),
    solution="""
        def to_device(model, images, labels, device):
            model = model.to(device)
            images = images.to(device)
            labels = labels.to(device)
            return model, images, labels
        """,
)

q2 = Exercise(
    ("q2: time a GPU operation correctly", "q2：正确地为 GPU 操作计时"),
    _check_time_op,
    hint=(
        """
        Two things must not be inside the timed stretch: the first calls' one-off costs, and
        work still queued from before. And the clock must not stop while work is still queued.
        Which call makes the host wait for the device?
        """,
        "有两样东西不能落在计时的区间里：最初几次调用的一次性开销，以及之前仍在排队的工作。"
        "而且，在还有工作排队时，时钟不能停下。哪个调用会让主机等待设备？",
    ),
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
    ("q3: choose the device", "q3：选择设备"),
    _check_choose_device,
    hint=(
        """
        torch.cuda.is_available() for NVIDIA, torch.backends.mps.is_available() for Apple
        silicon, and the CPU otherwise.
        """,
        "NVIDIA 用 torch.cuda.is_available()，Apple 芯片用 torch.backends.mps.is_available()，"
        "其他情况用 CPU。",
    ),
    solution="""
        def choose_device():
            if torch.cuda.is_available():
                return torch.device("cuda")
            if torch.backends.mps.is_available():
                return torch.device("mps")
            return torch.device("cpu")
        """,
)
