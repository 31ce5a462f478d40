"""Exercises for lesson 02, save and load: a state_dict round trip, a safe whole-model load, and
the key names of nn_seq.py in the lecture's repository."""

from __future__ import annotations

import builtins
import io
import os
import pickle
import tempfile
import warnings
from pathlib import Path
from typing import Any
from unittest import mock

import torch
from torch import nn

from ..i18n import say
from ..models import LessonNet, LessonNetSequential, ModernNet
from . import Exercise, NotYet, ____, describe_error, run_learner, short

__all__ = ["____", "q1", "q2", "q3", "make_model"]


def make_model() -> nn.Module:
    """A fresh, small network with BatchNorm, whose buffers a state_dict must carry too."""
    return ModernNet(widths=(8, 16, 16))


def _trained_model() -> nn.Module:
    """A model whose weights and BatchNorm running statistics both differ from a fresh one's."""
    torch.manual_seed(0)
    model = make_model()
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.rand(16, 3, 32, 32) * 2)
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.eval()


def _pth(folder: str, stem: str) -> Path:
    """The file ``folder/stem.pth``."""
    return Path(folder) / f"{stem}.pth"


def _state_dict_in(saved: Any, keys: list[str]) -> dict[str, Any]:
    """The state_dict in what the file held: the dict itself, or one inside a checkpoint dict."""
    if not isinstance(saved, dict):
        raise NotYet(
            say(
                f"the file holds a {type(saved).__name__}; save the dict model.state_dict().",
                f"文件里存的是一个 {type(saved).__name__}；请保存字典 model.state_dict()。",
            )
        )
    if all(k in saved for k in keys):
        return saved
    for value in saved.values():  # a checkpoint such as {"model": state_dict, "epoch": 3}
        if isinstance(value, dict) and all(k in value for k in keys):
            return value
    if not any(k in saved for k in keys):
        names = ", ".join(repr(k) for k in list(saved)[:4])
        raise NotYet(
            say(
                f"the file holds a dict with keys {names}, but no state_dict: "
                "save model.state_dict().",
                f"文件里存的是一个键为 {names} 的字典，但里面没有 state_dict："
                "请保存 model.state_dict()。",
            )
        )
    missing = [k for k in keys if k not in saved]
    missing.sort(key=lambda k: "running_mean" not in k)  # name a BatchNorm statistic first
    raise NotYet(
        say(
            f"the file lacks {len(missing)} entries of the state_dict, such as {missing[0]}: "
            "save model.state_dict(), which holds the BatchNorm statistics as well as the "
            "parameters.",
            f"文件缺少 state_dict 中的 {len(missing)} 项，例如 {missing[0]}："
            "请保存 model.state_dict()，它除了参数，还包含批量规范化（BatchNorm）的统计量。",
        )
    )


def _check_save_and_reload(save_and_reload: Any) -> str:
    model = _trained_model()
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        expected = model(x)
    made: list[nn.Module] = []
    reads: list[str] = []
    real_load, real_open = torch.load, io.open

    from_file: set[int] = set()  # the tensors that torch.load gave back
    given: list[set[int]] = []  # the tensors each load_state_dict of a fresh model was given

    def tensor_ids(value: Any) -> set[int]:
        if isinstance(value, torch.Tensor):
            return {id(value)}
        if isinstance(value, dict):
            return set().union(*(tensor_ids(v) for v in value.values()))
        return set()

    def fresh_model() -> nn.Module:
        made.append(make_model())
        real_load_state_dict = made[-1].load_state_dict

        def recording_load_state_dict(state_dict: Any, *args: Any, **kwargs: Any) -> Any:
            given.append(tensor_ids(state_dict))
            return real_load_state_dict(state_dict, *args, **kwargs)

        made[-1].load_state_dict = recording_load_state_dict  # type: ignore[method-assign]
        return made[-1]

    def recording_load(f: Any, *args: Any, **kwargs: Any) -> Any:
        name = f if isinstance(f, str | os.PathLike) else getattr(f, "name", None)  # or a file
        if isinstance(name, str | os.PathLike):
            reads.append(str(Path(name).resolve()))
        loaded = real_load(f, *args, **kwargs)
        from_file.update(tensor_ids(loaded))
        return loaded

    def recording_open(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if isinstance(file, str | os.PathLike) and "r" in mode:  # io.BytesIO(open(...).read())
            reads.append(str(Path(file).resolve()))
        return real_open(file, mode, *args, **kwargs)

    with tempfile.TemporaryDirectory() as folder:
        path = _pth(folder, "model_state")
        with (
            mock.patch.object(torch, "load", recording_load),
            mock.patch.object(torch.serialization, "load", recording_load),
            mock.patch.object(builtins, "open", recording_open),
            mock.patch.object(io, "open", recording_open),
        ):
            loaded = run_learner("save_and_reload", save_and_reload, model, fresh_model, path)
        if loaded is model:
            raise NotYet(
                say(
                    "you returned the model you were given; build a fresh one with make_model() "
                    "and load the file into it.",
                    "你返回的是传给你的那个模型；请用 make_model() 构建一个新模型，"
                    "再把文件加载进去。",
                )
            )
        if not isinstance(loaded, nn.Module):
            raise NotYet(
                say(
                    "save_and_reload should return the reloaded model; it returned "
                    f"{type(loaded).__name__}.",
                    f"save_and_reload 应当返回重新加载的模型；它返回的是 {type(loaded).__name__}。",
                )
            )
        if not path.is_file():
            raise NotYet(
                say(
                    f"nothing was saved at the path you were given ({path.name}).",
                    f"传给你的路径（{path.name}）上没有保存任何东西。",
                )
            )
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # a file from pickle.dump warns of its protocol
                saved = real_load(path, weights_only=True)
        except pickle.UnpicklingError:
            raise NotYet(
                say(
                    "torch.load(path, weights_only=True) refuses the file: it was not written by "
                    "torch.save from tensors alone (a whole model is refused too). Save "
                    "model.state_dict() with torch.save.",
                    "torch.load(path, weights_only=True) 拒绝读取这个文件：它不是 torch.save "
                    "只用张量写出的（整个模型同样会被拒绝）。请用 torch.save 保存 "
                    "model.state_dict()。",
                )
            ) from None
        except Exception as exc:
            raise NotYet(
                say(
                    "torch.load(path, weights_only=True) cannot read the file "
                    f"({describe_error(exc)}): write it with torch.save.",
                    "torch.load(path, weights_only=True) 无法读取这个文件"
                    f"（{describe_error(exc)}）：请用 torch.save 写出它。",
                )
            ) from None
    _state_dict_in(saved, list(model.state_dict()))
    if not any(loaded is m for m in made):
        raise NotYet(
            say(
                "the model you return was not built by make_model(): make the new model with it, "
                "then load the file into that model.",
                "你返回的模型不是 make_model() 构建的：请用它构建新模型，"
                "再把文件加载到这个模型中。",
            )
        )
    if str(path.resolve()) not in reads:
        raise NotYet(
            say(
                "the new model never read the file: load it back with torch.load(path, "
                "weights_only=True).",
                "新模型从没读取过这个文件：请用 torch.load(path, weights_only=True) 把它读回来。",
            )
        )
    if given and not any(ids and ids <= from_file for ids in given):
        raise NotYet(
            say(
                "the new model's load_state_dict was given other tensors than the file's (the "
                "model you were given, perhaps): load what torch.load read from the file.",
                "传给新模型的 load_state_dict 的不是文件中的张量（也许是传给你的那个模型的张量）："
                "请加载 torch.load 从文件中读出的内容。",
            )
        )
    loaded.eval()
    with torch.no_grad():
        got = loaded(x)
    if not torch.equal(got, expected):
        difference = (got - expected).abs().max().item()
        raise NotYet(
            say(
                f"the reloaded model's outputs differ from the original's by up to "
                f"{difference:.3g}: did you load the file into the new model with "
                "load_state_dict?",
                f"重新加载的模型的输出与原模型的输出最多相差 {difference:.3g}："
                "你用 load_state_dict 把文件加载到新模型中了吗？",
            )
        )
    return say(
        "the file is a state_dict, and the reloaded model gives exactly the original's outputs.",
        "文件是一个 state_dict，重新加载的模型给出的输出与原模型的完全相同。",
    )


_TRIPPED: list[str] = []


def _trip(message: str) -> str:
    """What a hostile file could run on loading; here it only records that it ran."""
    _TRIPPED.append(message)
    return message


class _Payload:
    """An object whose unpickling calls ``_trip``, as a hostile file would call anything."""

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (_trip, (say("code from the file ran", "文件里的代码运行了"),))


def _classes_of_a_whole_model() -> set[str]:
    """The names of the classes a whole ``LessonNetSequential`` file refers to, as PyTorch reads
    them from such a file with ``get_unsafe_globals_in_checkpoint``. That function leaves out
    what the session's allow-list holds: the caller empties the list first."""
    with tempfile.TemporaryDirectory() as folder:
        path = _pth(folder, "whole_model")
        torch.save(LessonNetSequential(), path)
        return set(torch.serialization.get_unsafe_globals_in_checkpoint(path))


def _global_name(entry: Any) -> str:
    """The name under which a file refers to an allow-list entry: a class, or a ``(class, name)``
    pair."""
    if isinstance(entry, tuple):
        return entry[1]
    return f"{entry.__module__}.{entry.__qualname__}"


def _allow(entries: list[Any]) -> None:
    """Make ``entries`` PyTorch's session-wide allow-list, exactly."""
    torch.serialization.clear_safe_globals()
    torch.serialization.add_safe_globals(entries)


def _check_load_whole_model(load_whole_model: Any) -> str:
    """Run the cases first with the model's classes off PyTorch's session-wide allow-list, as a
    fresh kernel has it, and put the list back afterwards. A function that works only thanks to
    an ``add_safe_globals`` call outside it is correct, with a note; one that calls it inside
    leaves nothing behind in the session."""
    kept = torch.serialization.get_safe_globals()
    try:
        torch.serialization.clear_safe_globals()
        needed = _classes_of_a_whole_model()
        fresh = [entry for entry in kept if _global_name(entry) not in needed]
        _allow(fresh)
        try:
            verdict = _load_whole_model_cases(load_whole_model)
        except NotYet as not_yet:
            if len(kept) == len(fresh) or "Unsupported global" not in str(not_yet):
                raise
            _allow(kept)  # the session's own list, where an earlier cell allowed the classes
            return _load_whole_model_cases(load_whole_model) + say(
                " Note: it works only because add_safe_globals, outside the function, allowed "
                "the model's classes for the whole session; with "
                "`with torch.serialization.safe_globals([...]):` inside it, it works on its own.",
                "注意：它能通过，只是因为函数外面的 add_safe_globals 在整个会话中允许了模型的类；"
                "在函数里面使用 `with torch.serialization.safe_globals([...]):`，"
                "它就能独立运行。",
            )
        added = set(torch.serialization.get_safe_globals()) - set(fresh)
    finally:
        _allow(kept)
    if added:
        verdict += say(
            " Note: add_safe_globals allows those classes for every later load of this session; "
            "`with torch.serialization.safe_globals([...]):` allows them for this one only.",
            "注意：add_safe_globals 会在本次会话此后的每一次加载中都允许这些类；"
            "`with torch.serialization.safe_globals([...]):` 只在这一次加载中允许它们。",
        )
    return verdict


def _load_whole_model_cases(load_whole_model: Any) -> str:
    torch.manual_seed(0)
    model = LessonNetSequential().eval()
    x = torch.rand(4, 3, 32, 32)
    with tempfile.TemporaryDirectory() as folder:
        path = _pth(folder, "whole_model")
        torch.save(model, path)
        loaded = run_learner("load_whole_model", load_whole_model, path)
        if not isinstance(loaded, LessonNetSequential):
            raise NotYet(
                say(
                    f"load_whole_model returned {type(loaded).__name__}; the file holds a whole "
                    "LessonNetSequential.",
                    f"load_whole_model 返回了 {type(loaded).__name__}；"
                    "文件中存的是一个完整的 LessonNetSequential。",
                )
            )
        if not torch.equal(loaded(x), model(x)):
            raise NotYet(
                say(
                    "the loaded model's outputs differ from the saved model's.",
                    "加载得到的模型的输出与保存的模型的输出不同。",
                )
            )

        hostile = _pth(folder, "hostile")
        torch.save({"model": model, "extra": _Payload()}, hostile)
        _TRIPPED.clear()
        try:
            load_whole_model(hostile)
        except Exception as exc:
            refused = type(exc).__name__
        else:
            refused = ""
        if _TRIPPED:
            raise NotYet(
                say(
                    "loading a file ran a function that the file asked for. Either your function "
                    "uses weights_only=False (or falls back to it), or its allow-list holds more "
                    "than the model's classes: get_unsafe_globals_in_checkpoint lists a hostile "
                    "file's function too. Allow only the classes a LessonNetSequential is made of.",
                    "加载文件时运行了文件要求运行的函数。要么你的函数使用了 weights_only=False"
                    "（或者在出错后退回到它），要么它的允许列表里不只有模型的类："
                    "get_unsafe_globals_in_checkpoint 也会列出恶意文件里的函数。"
                    "请只允许构成 LessonNetSequential 的那些类。",
                )
            )
        if not refused:
            raise NotYet(
                say(
                    "for a file that asks to run a function, your function returned instead of "
                    "raising: let torch.load's error through, so that the caller knows.",
                    "对于要求运行函数的文件，你的函数正常返回了，而没有抛出错误："
                    "请让 torch.load 的错误传出去，好让调用者知道。",
                )
            )
    return say(
        "the whole model loads with weights_only=True, and a file that asks to run a function is "
        f"refused with {refused}.",
        f"整个模型可以用 weights_only=True 加载，而要求运行函数的文件会被拒绝，抛出 {refused}。",
    )


def _lecture_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """``model``'s state_dict under the key names of ``nn_seq.py`` in the lecture's repository
    (``model1.0.weight``, ...)."""
    return {"model1." + k.removeprefix("model."): v for k, v in model.state_dict().items()}


def _check_to_course_keys(to_course_keys: Any) -> str:
    torch.manual_seed(0)
    lecture = LessonNetSequential().eval()
    lecture_state = _lecture_state(lecture)
    keys = list(lecture_state)
    renamed = run_learner("to_course_keys", to_course_keys, dict(lecture_state))
    if not isinstance(renamed, dict):
        raise NotYet(
            say(
                f"to_course_keys should return a dict; it returned {type(renamed).__name__}.",
                f"to_course_keys 应当返回一个字典；它返回的是 {type(renamed).__name__}。",
            )
        )
    net = LessonNet()
    expected_keys = list(net.state_dict())
    wrong = [k for k in renamed if k not in expected_keys]
    if wrong:
        raise NotYet(
            say(
                f"LessonNet has no key {wrong[0]!r}; its keys are {expected_keys[0]!r} ... "
                f"{expected_keys[-1]!r}.",
                f"LessonNet 没有键 {wrong[0]!r}；它的键是 {expected_keys[0]!r} …… "
                f"{expected_keys[-1]!r}。",
            )
        )
    missing = [k for k in expected_keys if k not in renamed]
    if missing:
        raise NotYet(
            say(
                f"the result lacks {missing[0]!r} ({len(missing)} of LessonNet's keys are "
                "missing).",
                f"结果中缺少 {missing[0]!r}（LessonNet 的键一共缺了 {len(missing)} 个）。",
            )
        )
    for key, value in renamed.items():
        if not isinstance(value, torch.Tensor):
            raise NotYet(
                say(
                    f"under {key!r} you put {short(value)}; keep the lecture's tensors.",
                    f"你在 {key!r} 下放的是 {short(value)}；请保留讲义的张量。",
                )
            )
        if value.is_meta:
            raise NotYet(
                say(
                    f"the tensor under {key!r} is on the meta device: it has a shape but no "
                    "values. Keep the lecture's tensors themselves.",
                    f"{key!r} 下的张量在 meta 设备上：它只有形状，没有数值。请保留讲义的张量本身。",
                )
            )
    try:
        net.load_state_dict(renamed)
    except RuntimeError as exc:
        lines = [line.strip() for line in str(exc).splitlines()[1:] if line.strip()]
        sizes = [line for line in lines if "size mismatch" in line]
        first = (sizes or lines or [describe_error(exc)])[0]
        raise NotYet(say(first, f"LessonNet 的 load_state_dict 报错：{first}")) from None
    kept = {id(t) for t in lecture_state.values()}
    lecture_values = list(lecture_state.values())
    wrong_values = [
        k
        for k, v in renamed.items()
        if id(v) not in kept
        and not any(v.shape == t.shape and torch.equal(v, t) for t in lecture_values)
    ]
    if wrong_values:
        raise NotYet(
            say(
                f"the names are right, but the tensor under {wrong_values[0]!r} is none of the "
                "lecture's: keep each tensor as it is and change only its name.",
                f"名字是对的，但 {wrong_values[0]!r} 下的张量不是讲义的任何一个张量："
                "请保持每个张量不变，只改它的名字。",
            )
        )
    x = torch.rand(4, 3, 32, 32)
    if not torch.equal(net.eval()(x), lecture(x)):
        raise NotYet(
            say(
                "LessonNet loads your dict, but its outputs differ: are tensors under the wrong "
                "names?",
                "LessonNet 能加载你的字典，但输出不同：是不是有张量放在了错误的名字下？",
            )
        )
    return say(
        f"all {len(keys)} tensors land in LessonNet, which then computes what the lecture's net "
        "did.",
        f"全部 {len(keys)} 个张量都进入了 LessonNet，它算出的结果与讲义的网络相同。",
    )


q1 = Exercise(
    ("q1: a state_dict round trip", "q1：state_dict 的保存与读回"),
    _check_save_and_reload,
    hint=(
        """
        Method 2 saves model.state_dict(), not the model. Reading it back takes two steps: a
        fresh model from make_model(), then load_state_dict with what torch.load returns.
        """,
        "方式2 保存的是 model.state_dict()，而不是模型。把它读回来需要两步："
        "先用 make_model() 构建一个新模型，再把 torch.load 返回的内容交给 load_state_dict。",
    ),
    solution="""
        def save_and_reload(model, make_model, path):
            torch.save(model.state_dict(), path)
            new_model = make_model()
            new_model.load_state_dict(torch.load(path, weights_only=True))
            return new_model
        """,
)

q2 = Exercise(
    ("q2: a whole model, loaded safely", "q2：安全地加载整个模型"),
    _check_load_whole_model,
    hint=(
        """
        Keep weights_only=True (the default since PyTorch 2.6) and list the classes inside
        `with torch.serialization.safe_globals([...]):`.
        `torch.serialization.get_unsafe_globals_in_checkpoint(path)` tells you which ones the
        file needs.
        """,
        "保留 weights_only=True（自 PyTorch 2.6 起的默认值），并在 "
        "`with torch.serialization.safe_globals([...]):` 里列出所需的类。"
        "torch.serialization.get_unsafe_globals_in_checkpoint(path) 会告诉你文件需要哪些类。",
    ),
    solution="""
        def load_whole_model(path):
            layers = [nn.Sequential, nn.Conv2d, nn.MaxPool2d, nn.Flatten, nn.Linear]
            with torch.serialization.safe_globals([LessonNetSequential, *layers]):
                return torch.load(path, weights_only=True)
        """,
)

q3 = Exercise(
    (
        "q3: the key names of nn_seq.py in the lecture's repository",
        "q3：讲义代码仓库中 nn_seq.py 的键名",
    ),
    _check_to_course_keys,
    hint=(
        """
        Both networks hold the same tensors in the same order; only the names differ. Lesson 01
        copied weights between two such networks in one line, with zip.
        """,
        "两个网络按相同的顺序存放相同的张量，只有名字不同。"
        "第 01 课用 zip 只写一行代码，就在两个这样的网络之间复制了权重。",
    ),
    solution="""
        def to_course_keys(lecture_state):
            names = LessonNet().state_dict().keys()
            return dict(zip(names, lecture_state.values()))
        """,
)
