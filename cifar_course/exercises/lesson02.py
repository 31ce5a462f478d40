"""Exercises for lesson 02, save and load: a state_dict round trip, a safe whole-model load, and
the lecture's key names."""

from __future__ import annotations

import pickle
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..models import LessonNet, LessonNetSequential, ModernNet
from . import Exercise, NotYet, ____, describe_error, run_learner

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


def _check_save_and_reload(save_and_reload: Any) -> str:
    model = _trained_model()
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        expected = model(x)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model_state.pth"
        loaded = run_learner("save_and_reload", save_and_reload, model, make_model, path)
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
            saved = torch.load(path, weights_only=True)
        except pickle.UnpicklingError:
            raise NotYet(
                "the file holds more than tensors (a whole model?), so weights_only=True refuses "
                "it: save model.state_dict()."
            ) from None
    if not isinstance(saved, dict):
        raise NotYet(f"the file holds a {type(saved).__name__}; save the dict model.state_dict().")
    missing = [k for k in model.state_dict() if k not in saved]
    missing.sort(key=lambda k: "running_mean" not in k)  # name a BatchNorm statistic first
    if missing:
        raise NotYet(
            f"the file lacks {len(missing)} entries of the state_dict, such as {missing[0]}: "
            "save model.state_dict(), which holds the BatchNorm statistics as well as the "
            "parameters."
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


def _check_load_whole_model(load_whole_model: Any) -> str:
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
                "loading a file ran code that the file asked for: your function uses "
                "weights_only=False (or falls back to it) somewhere. Allow only the classes the "
                "model needs, with torch.serialization.safe_globals."
            )
        if not refused:
            raise NotYet("a file that asks to run a function loaded without an error.")
    return (
        "the whole model loads with weights_only=True, and a file that asks to run a function is "
        f"refused with {refused}."
    )


def _lecture_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """``model``'s state_dict under the lecture's key names (``model1.0.weight``, ...)."""
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
    try:
        net.load_state_dict(renamed)
    except RuntimeError as exc:
        lines = [line.strip() for line in str(exc).splitlines() if "size mismatch" in line]
        raise NotYet(lines[0] if lines else describe_error(exc)) from None
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
        torch.save(model.state_dict(), path) writes the tensors. To read them back, make a new
        model with make_model(), then new.load_state_dict(torch.load(path, weights_only=True)).
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
    "q3: the lecture's key names",
    _check_to_course_keys,
    hint="""
        Both networks hold the same tensors in the same order; only the names differ. zip the
        names of LessonNet().state_dict() with the lecture's values.
    """,
    solution="""
        def to_course_keys(lecture_state):
            names = LessonNet().state_dict().keys()
            return dict(zip(names, lecture_state.values()))
    """,
)
