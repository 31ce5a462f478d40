"""What the exercise tests share: the notebooks, their checks, and running an answer."""

from __future__ import annotations

import importlib
import re
import textwrap
from pathlib import Path
from types import ModuleType

import nbformat

from cifar_course.exercises import Exercise, Feedback

ROOT = Path(__file__).resolve().parents[1]
LESSONS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
FOLDER = ROOT / "notebooks" / "exercises"
EXERCISES = sorted(FOLDER.glob("[0-9][0-9]_*.ipynb"))
SOLUTIONS = sorted((FOLDER / "solutions").glob("[0-9][0-9]_*.ipynb"))
CHECK = re.compile(r"^(q\d)\.check\((.*)\)$")


def module_for(path: Path) -> ModuleType:
    return importlib.import_module(f"cifar_course.exercises.lesson{path.name[:2]}")


def exercises_in(module: ModuleType) -> dict[str, Exercise]:
    return {
        n: q
        for n in ("q1", "q2", "q3", "q4", "q5")
        if isinstance(q := getattr(module, n, None), Exercise)
    }


def check_cells(nb) -> list[int]:
    return [
        i for i, c in enumerate(nb.cells) if c.cell_type == "code" and CHECK.match(c.source.strip())
    ]


def namespace(path: Path, answers: bool) -> dict:
    """The notebook's imports, plus every reference answer when ``answers``."""
    nb = nbformat.read(path, as_version=4)
    scope: dict = {}
    exec(nb.cells[2].source, scope)  # the imports cell
    if answers:
        for exercise in exercises_in(module_for(path)).values():
            exec(exercise.solution_code, scope)
    return scope


def run_checks(path: Path, scope: dict) -> dict[str, Feedback]:
    nb = nbformat.read(path, as_version=4)
    results = {}
    for i in check_cells(nb):
        number, args = CHECK.match(nb.cells[i].source.strip()).groups()
        results[number] = eval(f"{number}.evaluate({args})", scope)
    return results


def mistake_gets_its_message(lesson: str, number: str, answer: str, expected: str) -> None:
    """``answer`` (code defining one wrong answer) gets Not yet from check ``number``, with a
    message that holds ``expected``; the lesson's other answers are the reference ones."""
    path = next(p for p in EXERCISES if p.name.startswith(lesson))
    scope = namespace(path, answers=True)  # the other answers right, this one wrong
    exec(textwrap.dedent(answer), scope)
    feedback = run_checks(path, scope)[number]
    assert not feedback.correct
    assert expected in feedback.message, feedback.message


def alternative_is_correct(lesson: str, answer: str) -> None:
    """``answer`` (code defining right answers written differently) passes every check."""
    path = next(p for p in EXERCISES if p.name.startswith(lesson))
    scope = namespace(path, answers=True)
    exec(textwrap.dedent(answer), scope)
    results = run_checks(path, scope)
    assert all(f.correct for f in results.values()), results
