"""Exercises for lesson 02, save and load: a state_dict round trip, a safe whole-model load, and
the key names of nn_seq.py in the lecture's repository."""

from __future__ import annotations

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


def _state_dict_in(saved: Any, keys: list[str]) -> dict[str, Any]:
    """The state_dict in what the file held: the dict itself, or one inside a checkpoint dict."""
    if not isinstance(saved, dict):
        raise NotYet(f"the file holds a {type(saved).__name__}; save the dict model.state_dict().")
    if all(k in saved for k in keys):
        return saved
    for value in saved.values():  # a checkpoint such as {"model": state_dict, "epoch": 3}
        if isinstance(value, dict) and all(k in value for k in keys):
            return value
    if not any(k in saved for k in keys):
        names = ", ".join(repr(k) for k in list(saved)[:4])
        raise NotYet(
            f"the file holds a dict with keys {names}, but no state_dict: save model.state_dict()."
        )
    missing = [k for k in keys if k not in saved]
    missing.sort(key=lambda k: "running_mean" not in k)  # name a BatchNorm statistic first
    raise NotYet(
        f"the file lacks {len(missing)} entries of the state_dict, such as {missing[0]}: "
        "save model.state_dict(), which holds the BatchNorm statistics as well as the parameters."
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
        path = Path(folder) / "model_state.pth"
        with (
            mock.patch.object(torch, "load", recording_load),
            mock.patch.object(torch.serialization, "load", recording_load),
            mock.patch("builtins.open", recording_open),
            mock.patch.object(io, "open", recording_open),
        ):
            loaded = run_learner("save_and_reload", save_and_reload, model, fresh_model, path)
        if loaded is model:
            raise NotYet(
                "you returned the model you were given; build a fresh one with make_model() and "
                "load the file into it."
            )
        if not isinstance(loaded, nn.Module):
            raise NotYet(
                "save_and_reload should return the reloaded model; it returned "
                f"{type(loaded).__name__}."
            )
        if not path.is_file():
            raise NotYet(f"nothing was saved at the path you were given ({path.name}).")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # a file from pickle.dump warns of its protocol
                saved = real_load(path, weights_only=True)
        except pickle.UnpicklingError:
            raise NotYet(
                "torch.load(path, weights_only=True) refuses the file: it was not written by "
                "torch.save from tensors alone (a whole model is refused too). Save "
                "model.state_dict() with torch.save."
            ) from None
        except Exception as exc:
            raise NotYet(
                "torch.load(path, weights_only=True) cannot read the file "
                f"({describe_error(exc)}): write it with torch.save."
            ) from None
    _state_dict_in(saved, list(model.state_dict()))
    if not any(loaded is m for m in made):
        raise NotYet(
            "the model you return was not built by make_model(): make the new model with it, "
            "then load the file into that model."
        )
    if str(path.resolve()) not in reads:
        raise NotYet(
            "the new model never read the file: load it back with torch.load(path, "
            "weights_only=True)."
        )
    if given and not any(ids and ids <= from_file for ids in given):
        raise NotYet(
            "the new model's load_state_dict was given other tensors than the file's (the "
            "model you were given, perhaps): load what torch.load read from the file."
        )
    loaded.eval()
    with torch.no_grad():
        got = loaded(x)
    if not torch.equal(got, expected):
        difference = (got - expected).abs().max().item()
        raise NotYet(
            f"the reloaded model's outputs differ from the original's by up to {difference:.3g}: "
            "did you load the file into the new model with load_state_dict?"
        )
    return "the file is a state_dict, and the reloaded model gives exactly the original's outputs."


_TRIPPED: list[str] = []


def _trip(message: str) -> str:
    """What a hostile file could run on loading; here it only records that it ran."""
    _TRIPPED.append(message)
    return message


class _Payload:
    """An object whose unpickling calls ``_trip``, as a hostile file would call anything."""

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (_trip, ("code from the file ran",))


def _classes_of_a_whole_model() -> set[str]:
    """The names of the classes a whole ``LessonNetSequential`` file refers to, as PyTorch reads
    them from such a file with ``get_unsafe_globals_in_checkpoint``. That function leaves out
    what the session's allow-list holds: the caller empties the list first."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "whole_model.pth"
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
            return _load_whole_model_cases(load_whole_model) + (
                " Note: it works only because add_safe_globals, outside the function, allowed "
                "the model's classes for the whole session; with "
                "`with torch.serialization.safe_globals([...]):` inside it, it works on its own."
            )
        added = set(torch.serialization.get_safe_globals()) - set(fresh)
    finally:
        _allow(kept)
    if added:
        verdict += (
            " Note: add_safe_globals allows those classes for every later load of this session; "
            "`with torch.serialization.safe_globals([...]):` allows them for this one only."
        )
    return verdict


def _load_whole_model_cases(load_whole_model: Any) -> str:
    torch.manual_seed(0)
    model = LessonNetSequential().eval()
    x = torch.rand(4, 3, 32, 32)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "whole_model.pth"
        torch.save(model, path)
        loaded = run_learner("load_whole_model", load_whole_model, path)
        if not isinstance(loaded, LessonNetSequential):
            raise NotYet(
                f"load_whole_model returned {type(loaded).__name__}; the file holds a whole "
                "LessonNetSequential."
            )
        if not torch.equal(loaded(x), model(x)):
            raise NotYet("the loaded model's outputs differ from the saved model's.")

        hostile = Path(folder) / "hostile.pth"
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
                "loading a file ran a function that the file asked for. Either your function "
                "uses weights_only=False (or falls back to it), or its allow-list holds more than "
                "the model's classes: get_unsafe_globals_in_checkpoint lists a hostile file's "
                "function too. Allow only the classes a LessonNetSequential is made of."
            )
        if not refused:
            raise NotYet(
                "for a file that asks to run a function, your function returned instead of "
                "raising: let torch.load's error through, so that the caller knows."
            )
    return (
        "the whole model loads with weights_only=True, and a file that asks to run a function is "
        f"refused with {refused}."
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
        raise NotYet(f"to_course_keys should return a dict; it returned {type(renamed).__name__}.")
    net = LessonNet()
    expected_keys = list(net.state_dict())
    wrong = [k for k in renamed if k not in expected_keys]
    if wrong:
        raise NotYet(
            f"LessonNet has no key {wrong[0]!r}; its keys are {expected_keys[0]!r} ... "
            f"{expected_keys[-1]!r}."
        )
    missing = [k for k in expected_keys if k not in renamed]
    if missing:
        raise NotYet(
            f"the result lacks {missing[0]!r} ({len(missing)} of LessonNet's keys are missing)."
        )
    for key, value in renamed.items():
        if not isinstance(value, torch.Tensor):
            raise NotYet(f"under {key!r} you put {short(value)}; keep the lecture's tensors.")
        if value.is_meta:
            raise NotYet(
                f"the tensor under {key!r} is on the meta device: it has a shape but no values. "
                "Keep the lecture's tensors themselves."
            )
    try:
        net.load_state_dict(renamed)
    except RuntimeError as exc:
        lines = [line.strip() for line in str(exc).splitlines()[1:] if line.strip()]
        sizes = [line for line in lines if "size mismatch" in line]
        raise NotYet((sizes or lines or [describe_error(exc)])[0]) from None
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
            f"the names are right, but the tensor under {wrong_values[0]!r} is none of the "
            "lecture's: keep each tensor as it is and change only its name."
        )
    x = torch.rand(4, 3, 32, 32)
    if not torch.equal(net.eval()(x), lecture(x)):
        raise NotYet(
            "LessonNet loads your dict, but its outputs differ: are tensors under the wrong names?"
        )
    return (
        f"all {len(keys)} tensors land in LessonNet, which then computes what the lecture's net "
        "did."
    )


q1 = Exercise(
    "q1: a state_dict round trip",
    _check_save_and_reload,
    hint="""
        Method 2 saves model.state_dict(), not the model. Reading it back takes two steps: a
        fresh model from make_model(), then load_state_dict with what torch.load returns.
    """,
    solution="""
        def save_and_reload(model, make_model, path):
            torch.save(model.state_dict(), path)
            new_model = make_model()
            new_model.load_state_dict(torch.load(path, weights_only=True))
            return new_model
    """,
)

q2 = Exercise(
    "q2: a whole model, loaded safely",
    _check_load_whole_model,
    hint="""
        Keep weights_only=True (the default since PyTorch 2.6) and list the classes inside
        `with torch.serialization.safe_globals([...]):`. torch.serialization.
        get_unsafe_globals_in_checkpoint(path) tells you which ones the file needs.
    """,
    solution="""
        def load_whole_model(path):
            layers = [nn.Sequential, nn.Conv2d, nn.MaxPool2d, nn.Flatten, nn.Linear]
            with torch.serialization.safe_globals([LessonNetSequential, *layers]):
                return torch.load(path, weights_only=True)
    """,
)

q3 = Exercise(
    "q3: the key names of nn_seq.py in the lecture's repository",
    _check_to_course_keys,
    hint="""
        Both networks hold the same tensors in the same order; only the names differ. Lesson 01
        copied weights between two such networks in one line, with zip.
    """,
    solution="""
        def to_course_keys(lecture_state):
            names = LessonNet().state_dict().keys()
            return dict(zip(names, lecture_state.values()))
    """,
)
