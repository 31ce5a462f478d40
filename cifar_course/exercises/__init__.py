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
import math
import numbers
import random
import re
import signal
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import CodeType
from typing import Any

import numpy as np
import torch
from torch import nn

from ..i18n import language, say

TIME_LIMIT_S = 20  # one call of the learner's code may take this long
CHECK_LIMIT_S = 60  # and a whole check, which may call it several times
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class _Blank:
    """The placeholder ``____`` that a learner replaces with an answer."""

    def __repr__(self) -> str:
        return "____"

    def __bool__(self) -> bool:  # `if ____:` is a blank too, not True
        raise TypeError(say("____ is a blank to fill in", "____ 是要你填写的空白"))

    def __reduce__(self) -> Any:  # nor can a blank be saved to a file
        raise TypeError(say("____ is a blank to fill in", "____ 是要你填写的空白"))


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


class _TimeUp(BaseException):
    """Raised inside the learner's code when its time is up (not an Exception: an ``except
    Exception`` in that code cannot swallow it)."""


@contextmanager
def _time_limit(seconds: float) -> Iterator[None]:
    """Raise ``_TimeUp`` in the code run inside, after ``seconds``: with ``SIGALRM``, so on Linux
    and macOS in the main thread, where Jupyter runs a cell. Elsewhere (Windows, other threads)
    there is no limit: an endless loop there needs the kernel's interrupt button. Nested limits
    keep the outer one's deadline."""
    usable = hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
    if not usable:
        yield
        return

    def time_up(signum: int, frame: Any) -> None:
        raise _TimeUp

    outer_left = signal.getitimer(signal.ITIMER_REAL)[0]
    began = time.monotonic()
    previous = signal.signal(signal.SIGALRM, time_up)
    signal.setitimer(signal.ITIMER_REAL, min(seconds, outer_left) if outer_left else seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if outer_left:
            left = outer_left - (time.monotonic() - began)
            signal.setitimer(signal.ITIMER_REAL, max(left, 0.001))


def _settings() -> dict[str, Any]:
    """The session-wide settings that no answer should change for good."""
    return {
        "grad": torch.is_grad_enabled(),
        "dtype": torch.get_default_dtype(),
        "device": torch.get_default_device(),
        "threads": torch.get_num_threads(),
    }


def _restore_settings(settings: dict[str, Any]) -> None:
    torch.set_grad_enabled(settings["grad"])
    torch.set_default_dtype(settings["dtype"])
    if torch.get_default_device() != settings["device"]:
        # set_default_device installs a function mode even for the CPU; None removes it
        cpu = settings["device"] == torch.device("cpu")
        torch.set_default_device(None if cpu else settings["device"])
    torch.set_num_threads(settings["threads"])


def _what_changed(before: dict[str, Any], after: dict[str, Any], what: str) -> str | None:
    """The first setting ``what`` left changed, as advice; None if it left them all alone."""
    if before["grad"] != after["grad"]:
        return say(
            f"{what} turned gradients {'off' if before['grad'] else 'on'} for the rest of the "
            "session (torch.set_grad_enabled); use `with torch.no_grad():` so that they come back "
            "on after the block.",
            f"{_spaced(what)}把梯度计算{'关掉' if before['grad'] else '打开'}了，直到会话结束"
            "（torch.set_grad_enabled）；请用 `with torch.no_grad():`，"
            "离开代码块后梯度计算会恢复。",
        )
    if before["dtype"] != after["dtype"]:
        return say(
            f"{what} changed the default dtype to {after['dtype']} for the whole session; "
            "convert tensors with .to(dtype) instead.",
            f"{_spaced(what)}把整个会话的默认 dtype 改成了 {after['dtype']}；"
            "请改用 .to(dtype) 转换张量。",
        )
    if before["device"] != after["device"]:
        return say(
            f"{what} made {after['device']} the default device for the whole session "
            "(torch.set_default_device); move tensors and models with .to(device) instead.",
            f"{_spaced(what)}把 {after['device']} 设成了整个会话的默认设备"
            "（torch.set_default_device）；"
            "请改用 .to(device) 移动张量和模型。",
        )
    if before["threads"] != after["threads"]:
        return say(
            f"{what} changed PyTorch's thread count to {after['threads']} for the whole session; "
            "leave torch.set_num_threads alone.",
            f"{_spaced(what)}把整个会话中 PyTorch 的线程数改成了 {after['threads']}；"
            "请不要调用 torch.set_num_threads。",
        )
    return None


@contextmanager
def _random_states_kept() -> Iterator[None]:
    """Give back Python's, NumPy's and PyTorch's random states as they were: a check's own seeds
    and the random numbers an answer draws do not change what the learner's next cell draws."""
    python, numpy_state, cpu = random.getstate(), np.random.get_state(), torch.get_rng_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    try:
        yield
    finally:
        random.setstate(python)
        np.random.set_state(numpy_state)
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)


def run_learner(what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call the learner's ``fn`` within ``TIME_LIMIT_S``; turn its exception, a blank result, a
    call that runs out of time or one that leaves a session-wide setting changed (grad mode,
    default dtype, thread count: restored here) into ``NotYet``."""
    if not callable(fn):
        raise NotYet(
            say(
                f"{what} should be a function; you gave {type(fn).__name__} {short(fn, 60)}.",
                f"{_spaced(what)}应当是一个函数；你给的是 {type(fn).__name__} {short(fn, 60)}。",
            )
        )
    if _names_a_blank(getattr(inspect.unwrap(fn), "__code__", None)):  # under @torch.no_grad()
        raise NotYet(_still_blank(what, "uses"))
    before = _settings()
    try:
        with _time_limit(TIME_LIMIT_S):
            result = fn(*args, **kwargs)
    except NotYet:
        raise
    except _TimeUp:
        raise NotYet(
            say(
                f"{what} did not finish in {TIME_LIMIT_S} s; look for a loop that never ends.",
                f"{_spaced(what)}在 {TIME_LIMIT_S} 秒内没有运行完；找一找永不结束的循环。",
            )
        ) from None
    except SystemExit:
        raise NotYet(
            say(
                f"{what} called exit(): return the answer instead.",
                f"{_spaced(what)}调用了 exit()：请改为 return 答案。",
            )
        ) from None
    except Exception as exc:
        if "_Blank" in str(exc) or "____" in str(exc):
            raise NotYet(_still_blank(what, "uses")) from exc
        raise NotYet(
            say(
                f"{what} raised {describe_error(exc)}",
                f"{_spaced(what)}抛出了 {describe_error(exc)}",
            )
        ) from exc
    finally:
        after = _settings()
        _restore_settings(before)
    changed = _what_changed(before, after, what)
    if changed:
        raise NotYet(changed)
    if has_blank(result):
        raise NotYet(_still_blank(what, "returns"))
    return result


def _spaced(what: str) -> str:
    """``what`` before a Chinese word: a space after a name in Latin letters (``accuracy`` 返回了),
    none after Chinese (你的代码返回了)."""
    return f"{what} " if what[-1:].isascii() else what


def _still_blank(what: str, verb: str) -> str:
    if verb == "uses":
        return say(
            f"{what} still uses the blank ____: replace it with your code.",
            f"{_spaced(what)}里还有空白 ____：把它换成你的代码。",
        )
    return say(
        f"{what} still returns the blank ____: replace it with your code.",
        f"{_spaced(what)}返回的还是空白 ____：把它换成你的代码。",
    )


def as_number(value: Any, what: str, meaning: str) -> float:
    """The learner's ``value`` as a float, if it is a real number: a Python or NumPy number or a
    one-element tensor, not text, not True/False, not complex, not NaN; else ``NotYet``: "WHAT
    returned ...; return MEANING."."""
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.is_complex():
        value = value.item()
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool):
        raise NotYet(
            say(
                f"{what} returned {value}, a truth value; return {meaning}.",
                f"{_spaced(what)}返回了布尔值 {value}；应返回{meaning}。",
            )
        )
    if isinstance(value, str | bytes):
        raise NotYet(
            say(
                f"{what} returned the text {short(value)}; return {meaning}, not text.",
                f"{_spaced(what)}返回了文本 {short(value)}；应返回{meaning}，而不是文本。",
            )
        )
    if not isinstance(value, numbers.Real):
        raise NotYet(
            say(
                f"{what} returned {short(value)}; return {meaning}.",
                f"{_spaced(what)}返回了 {short(value)}；应返回{meaning}。",
            )
        )
    if math.isnan(value):
        raise NotYet(
            say(
                f"{what} returned nan; return {meaning}.",
                f"{_spaced(what)}返回了 nan；应返回{meaning}。",
            )
        )
    return float(value)


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
    language: str = field(default_factory=language)  # the message's, when it was checked

    def __str__(self) -> str:
        message = " ".join(self.message.split())  # one line, whatever the message held
        lang = self.language
        verdict = say("Correct", "正确", lang) if self.correct else say("Not yet", "还不对", lang)
        return f"{verdict}{say(': ', '：', lang)}{message}"


class Exercise:
    """One exercise: a check of the learner's answer, a hint, and a reference solution."""

    def __init__(
        self,
        name: tuple[str, str],
        checker: Callable[..., str],
        hint: tuple[str, str],
        solution: str | tuple[str, str],
    ) -> None:
        """``name``, ``hint`` and ``solution`` are each (English, Chinese); the two solutions are
        the same code, with their comments in each language (tests/test_zh.py compares them). A
        solution without comments is the same in both languages: give it once."""
        if isinstance(solution, str):
            solution = (solution, solution)
        self._names = name
        self._checker = checker
        self._hints = tuple(" ".join(text.split()) for text in hint)
        self._solutions = tuple(textwrap.dedent(code).strip() for code in solution)

    @property
    def name(self) -> str:
        """The exercise's number and title, in the language that is set."""
        return say(*self._names)

    @property
    def solution_code(self) -> str:
        """The reference solution's code, with its comments in the language that is set."""
        return say(*self._solutions)

    def evaluate(self, *answer: Any) -> Feedback:
        """Check ``answer`` and return the feedback without printing it. The check leaves the
        session as it found it: grad mode, default dtype, thread count and random states; an
        answer that changed a setting for good gets ``Not yet``, saying which."""
        if any(has_blank(part) for part in answer):
            return Feedback(
                False,
                say(
                    "replace the blank ____ with your answer, then run this cell.",
                    "把空白 ____ 换成你的答案，再运行这个单元格。",
                ),
            )
        settings = _settings()
        try:
            with _random_states_kept(), _time_limit(CHECK_LIMIT_S):
                message = self._checker(*answer)
        except NotYet as exc:
            return Feedback(False, str(exc))
        except _TimeUp:
            return Feedback(
                False,
                say(
                    f"the check did not finish in {CHECK_LIMIT_S} s: look for "
                    "a loop in your code that never ends.",
                    f"检查在 {CHECK_LIMIT_S} 秒内没有完成：找一找你代码里永不结束的循环。",
                ),
            )
        except SystemExit:
            return Feedback(
                False,
                say(
                    "your code called exit(): return the answer instead.",
                    "你的代码调用了 exit()：请改为 return 答案。",
                ),
            )
        except Exception as exc:  # an answer of a shape the check did not foresee
            return Feedback(
                False,
                say(
                    f"your answer could not be checked: {describe_error(exc)}",
                    f"无法检查你的答案：{describe_error(exc)}",
                ),
            )
        finally:
            after = _settings()
            _restore_settings(settings)
        changed = _what_changed(settings, after, say("your code", "你的代码"))
        return Feedback(False, changed) if changed else Feedback(True, message)

    def check(self, *answer: Any) -> None:
        """Print one line: ``Correct: ...`` or ``Not yet: ...`` with what is wrong (in Chinese,
        ``正确：...`` or ``还不对：...``)."""
        print(self.evaluate(*answer))

    def hint(self) -> None:
        """Show a hint: as markdown in a Jupyter kernel (its `code` rendered as code), as plain
        text elsewhere."""
        _show_markdown(
            say(f"Hint ({self.name}): {self._hints[0]}", f"提示（{self.name}）：{self._hints[1]}")
        )

    def solution(self) -> None:
        """Print the reference solution's code; it is not run."""
        print(
            say(
                f"One solution ({self.name}), to read and then write in your own words:\n",
                f"一种解法（{self.name}）：读懂它，再用你自己的话写出来。\n",
            )
        )
        print(self.solution_code)

    def __repr__(self) -> str:
        return say(
            f"<exercise {self.name}: .check(answer), .hint(), .solution()>",
            f"<练习 {self.name}：.check(答案)、.hint()、.solution()>",
        )
