"""Checked exercises: each lesson's practice, with instant feedback.

An exercise notebook imports one lesson's exercises and checks the learner's answer::

    from cifar_course.exercises.lesson01 import ____, q1
    q1.check(conv_output_size)   # prints "Correct: ..." or "Not yet: ..."
    q1.hint()                    # a nudge
    q1.solution()                # the reference code, shown, not run

A check runs the learner's code on cases of its own and compares what it does with what PyTorch
does; it never compares source text. It prints one line, and never a traceback of its own: a
blank answer, a half-written one or one that raises gets ``Not yet:`` and the reason.
"""

from __future__ import annotations

import inspect
import re
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from types import CodeType
from typing import Any

import torch
from torch import nn

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class _Blank:
    """The placeholder ``____`` that a learner replaces with an answer."""

    def __repr__(self) -> str:
        return "____"

    def __bool__(self) -> bool:  # `if ____:` is a blank too, not True
        raise TypeError("____ is a blank to fill in")

    def __reduce__(self) -> Any:  # nor can a blank be saved to a file
        raise TypeError("____ is a blank to fill in")


____ = _Blank()


def _show_markdown(text: str) -> None:
    """Display ``text`` as markdown in an IPython kernel, with the text itself as its plain-text
    form (what a terminal or a saved notebook's text view shows); print it anywhere else."""
    try:
        from IPython import get_ipython
        from IPython.display import display
    except ImportError:  # IPython comes with Jupyter; the command line may lack it
        get_ipython = None
    if get_ipython is None or get_ipython() is None:
        print(text)
        return
    display({"text/markdown": text, "text/plain": text}, raw=True)


class NotYet(Exception):
    """Raised inside a check: the answer is not right yet, and the message says why."""


def has_blank(value: Any) -> bool:
    """Whether ``value`` is the blank ``____`` or a list, tuple or dict that still holds one."""
    if isinstance(value, _Blank):
        return True
    if isinstance(value, list | tuple | set):
        return any(has_blank(item) for item in value)
    if isinstance(value, dict):
        return any(has_blank(item) for item in value.values())
    return False


def describe_error(exc: BaseException) -> str:
    """An exception as one short line: its type and the first line of its message."""
    lines = [_ANSI.sub("", line).strip() for line in str(exc).strip().splitlines()]
    # PyTorch's refusal to unpickle a class starts with a paragraph; the class's line says more.
    named = [line for line in lines if line.startswith("WeightsUnpickler error:")]
    first = named[0] if named else lines[0] if lines else ""
    if len(first) > 200:
        first = first[:197] + "..."
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def _names_a_blank(code: Any) -> bool:
    """Whether a function's code, or code nested in it, refers to ``____``: a statement that is
    only ``____`` does nothing when it runs, so running the function cannot tell."""
    if not isinstance(code, CodeType):
        return False
    return "____" in code.co_names or any(_names_a_blank(const) for const in code.co_consts)


def run_learner(what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call the learner's ``fn``; turn its exception, or a blank result, into ``NotYet``."""
    if not callable(fn):
        raise NotYet(f"{what} should be a function; you gave {type(fn).__name__} {short(fn, 60)}.")
    if _names_a_blank(getattr(inspect.unwrap(fn), "__code__", None)):  # under @torch.no_grad()
        raise NotYet(f"{what} still uses the blank ____: replace it with your code.")
    try:
        result = fn(*args, **kwargs)
    except NotYet:
        raise
    except Exception as exc:
        if "_Blank" in str(exc) or "____" in str(exc):
            raise NotYet(f"{what} still uses the blank ____: replace it with your code.") from exc
        raise NotYet(f"{what} raised {describe_error(exc)}") from exc
    if has_blank(result):
        raise NotYet(f"{what} still returns the blank ____: replace it with your code.")
    return result


def as_number(value: Any, what: str, meaning: str) -> float:
    """The learner's ``value`` as a float; else ``NotYet``: "WHAT returned ...; return MEANING."."""
    try:
        return float(value)
    except (TypeError, ValueError):
        raise NotYet(f"{what} returned {short(value)}; return {meaning}.") from None


def run_watched(
    model: nn.Module, what: str, fn: Callable[..., Any], *args: Any
) -> tuple[Any, list[tuple[bool, bool]]]:
    """``run_learner`` with a hook on ``model``: each forward pass's (training mode, grad on).

    Training mode means any layer's: ``model.training = False`` alone leaves the layers inside
    (Dropout, BatchNorm) in training mode, where ``model.eval()`` switches them all.
    """
    seen: list[tuple[bool, bool]] = []

    def record(module: nn.Module, inputs: Any, output: Any) -> None:
        training = any(layer.training for layer in module.modules())
        seen.append((training, torch.is_grad_enabled()))

    hook = model.register_forward_hook(record)
    try:
        return run_learner(what, fn, *args), seen
    finally:
        hook.remove()


def short(value: Any, limit: int = 80) -> str:
    """``repr(value)`` on one line, cut to ``limit`` characters: a tensor's repr spans lines."""
    text = " ".join(repr(value).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def shape_text(shape: Any) -> str:
    """A shape as the lessons print it: ``[64, 10]``."""
    return "[" + ", ".join(str(int(n)) for n in shape) + "]"


@dataclass(frozen=True)
class Feedback:
    """The outcome of one check: right or not, and the line the learner reads."""

    correct: bool
    message: str

    def __str__(self) -> str:
        message = " ".join(self.message.split())  # one line, whatever the message held
        return f"{'Correct' if self.correct else 'Not yet'}: {message}"


class Exercise:
    """One exercise: a check of the learner's answer, a hint, and a reference solution."""

    def __init__(self, name: str, checker: Callable[..., str], hint: str, solution: str) -> None:
        self.name = name
        self._checker = checker
        self._hint = " ".join(hint.split())
        self.solution_code = textwrap.dedent(solution).strip()

    def evaluate(self, *answer: Any) -> Feedback:
        """Check ``answer`` and return the feedback without printing it."""
        if any(has_blank(part) for part in answer):
            return Feedback(False, "replace the blank ____ with your answer, then run this cell.")
        try:
            return Feedback(True, self._checker(*answer))
        except NotYet as exc:
            return Feedback(False, str(exc))
        except Exception as exc:  # an answer of a shape the check did not foresee
            return Feedback(False, f"your answer could not be checked: {describe_error(exc)}")

    def check(self, *answer: Any) -> None:
        """Print one line: ``Correct: ...`` or ``Not yet: ...`` with what is wrong."""
        print(self.evaluate(*answer))

    def hint(self) -> None:
        """Show a hint: as markdown in a Jupyter kernel (its `code` rendered as code), as plain
        text elsewhere."""
        _show_markdown(f"Hint ({self.name}): {self._hint}")

    def solution(self) -> None:
        """Print the reference solution's code; it is not run."""
        print(f"One solution ({self.name}), to read and then write in your own words:\n")
        print(self.solution_code)

    def __repr__(self) -> str:
        return f"<exercise {self.name}: .check(answer), .hint(), .solution()>"
