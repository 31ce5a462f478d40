"""The exercises: every check says ``Not yet`` to the blanks and ``Correct`` to the solutions, in
the notebooks as a learner runs them, and names the mistake each exercise is about."""

from __future__ import annotations

import importlib
import re

import nbformat
import pytest
import torch
from exercise_cases import (
    CHECK,
    EXERCISES,
    FOLDER,
    LESSONS,
    ROOT,
    SOLUTIONS,
    check_cells,
    exercises_in,
    module_for,
    namespace,
    run_checks,
)
from torch import nn


def test_every_lesson_has_exercises_and_solutions_with_three_to_five_exercises():
    # named for what they are, so that JupyterLab's tabs tell a lesson from its exercises
    assert [p.name for p in EXERCISES] == [f"{p.stem}_exercises.ipynb" for p in LESSONS]
    assert [p.name for p in SOLUTIONS] == [f"{p.stem}_solutions.ipynb" for p in LESSONS]
    for path in EXERCISES:
        nb = nbformat.read(path, as_version=4)
        numbers = [CHECK.match(nb.cells[i].source.strip())[1] for i in check_cells(nb)]
        assert numbers == list(exercises_in(module_for(path))), path.name
        assert 3 <= len(numbers) <= 5, path.name


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.stem)
def test_each_lesson_links_its_exercises_in_its_last_cell(path):
    last = nbformat.read(path, as_version=4).cells[-1]
    assert last.cell_type == "markdown"
    assert f"(exercises/{path.stem}_exercises.ipynb)" in last.source


def test_the_readme_table_links_each_lessons_exercises():
    readme = (ROOT / "README.md").read_text()
    for path in LESSONS:
        row = next(line for line in readme.splitlines() if line.startswith(f"| {path.name[:2]} | "))
        assert f"(notebooks/exercises/{path.stem}_exercises.ipynb)" in row


@pytest.mark.parametrize("path", EXERCISES, ids=lambda p: p.stem)
def test_solution_notebook_is_the_exercise_notebook_with_the_answers_filled_in(path):
    exercise = nbformat.read(path, as_version=4)
    solution_name = path.name.replace("_exercises.ipynb", "_solutions.ipynb")
    solution = nbformat.read(FOLDER / "solutions" / solution_name, as_version=4)
    module = module_for(path)
    checks = check_cells(exercise)
    assert [exercise.cells[i].source for i in checks] == [
        c.source for c in solution.cells if CHECK.match(c.source.strip())
    ]
    solved = check_cells(solution)
    for i, j in zip(checks, solved, strict=True):
        number = CHECK.match(exercise.cells[i].source.strip())[1]
        assert exercise.cells[i - 2].source == solution.cells[j - 2].source  # the task itself
        assert exercise.cells[i - 1].source != solution.cells[j - 1].source
        assert solution.cells[j - 1].source == exercises_in(module)[number].solution_code
        assert "____" not in solution.cells[j - 1].source
        assert exercise.cells[i + 1].source == f"# {number}.hint()\n# {number}.solution()"


def printed(cell) -> str:
    assert [o.output_type for o in cell.outputs] == ["stream"], cell.source
    return cell.outputs[0].text


@pytest.mark.parametrize("path", EXERCISES, ids=lambda p: p.stem)
def test_with_the_blanks_in_place_every_check_says_not_yet(path, run_alone, tmp_path):
    nb = run_alone(path, tmp_path)
    checks = check_cells(nb)
    for i in checks:
        text = printed(nb.cells[i])
        assert text.startswith("Not yet: ") and text.count("\n") == 1, text
        answer = next(c for c in reversed(nb.cells[:i]) if c.cell_type == "code")
        if "____" in answer.source:  # a blank left in place is named as such
            assert "____" in text, text
    assert len(checks) == len(exercises_in(module_for(path)))


@pytest.mark.parametrize("path", SOLUTIONS, ids=lambda p: p.stem)
def test_in_the_solutions_every_check_says_correct(path, run_alone, tmp_path):
    """...and says what the stored notebook shows (a measured time's digits aside): a check whose
    message changed leaves no stale line in the solutions a learner reads."""
    stored = nbformat.read(path, as_version=4)
    nb = run_alone(path, tmp_path)
    for i in check_cells(nb):
        text = printed(nb.cells[i])
        assert text.startswith("Correct: ") and text.count("\n") == 1, text
        decimal = re.compile(r"\d+\.\d+")
        assert decimal.sub("#", printed(stored.cells[i])) == decimal.sub("#", text), (
            "the stored line is stale: run the solutions notebook again"
        )


def test_the_stored_solution_outputs_say_correct():
    for path in SOLUTIONS:
        nb = nbformat.read(path, as_version=4)
        for i in check_cells(nb):
            assert printed(nb.cells[i]).startswith("Correct: "), path.name
    for path in EXERCISES:  # the learner's copy starts clean
        nb = nbformat.read(path, as_version=4)
        assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), path.name


# ---- unit tests of each check, in-process -----------------------------------------------------


@pytest.mark.parametrize("path", EXERCISES, ids=lambda p: p.stem)
def test_every_reference_solution_is_correct(path):
    results = run_checks(path, namespace(path, answers=True))
    assert all(f.correct for f in results.values()), results


@pytest.mark.parametrize("path", EXERCISES, ids=lambda p: p.stem)
def test_odd_answers_get_not_yet_and_never_a_traceback(path):
    def raises(*args, **kwargs):
        raise ValueError("my own bug")

    scope = namespace(path, answers=True)
    nb = nbformat.read(path, as_version=4)
    for i in check_cells(nb):
        number, args = CHECK.match(nb.cells[i].source.strip()).groups()
        others = "".join(f", {name}" for name in args.split(", ")[1:])
        for answer in (None, 42, "text", [], lambda *a, **k: None, raises):
            scope["odd"] = answer
            feedback = eval(f"{number}.evaluate(odd{others})", scope)
            assert not feedback.correct, (number, answer)
            assert str(feedback).startswith("Not yet: ") and "\n" not in str(feedback)
            if answer is raises and callable(scope[args.split(", ")[0]]):
                # the learner's own exception is the reason given
                assert "ValueError: my own bug" in feedback.message, feedback.message


def test_hint_and_solution_print_without_running_anything(capsys):
    for path in EXERCISES:
        for exercise in exercises_in(module_for(path)).values():
            exercise.hint()
            exercise.solution()
            out = capsys.readouterr().out
            assert out.startswith(f"Hint ({exercise.name}): ")
            assert exercise.solution_code in out


def test_a_hint_in_a_kernel_is_markdown_so_its_code_renders(monkeypatch):
    """In Jupyter a hint is shown as markdown (`code` rendered as code, not as backticks), with
    the same text as its plain form."""
    import IPython
    import IPython.display

    shown = []
    monkeypatch.setattr(IPython, "get_ipython", lambda: object())
    monkeypatch.setattr(IPython.display, "display", lambda obj, raw: shown.append((obj, raw)))
    exercise = next(iter(exercises_in(module_for(EXERCISES[0])).values()))
    exercise.hint()
    ((bundle, raw),) = shown
    assert raw and bundle["text/markdown"] == bundle["text/plain"]
    assert bundle["text/markdown"].startswith(f"Hint ({exercise.name}): ")


def test_every_exercise_has_at_least_one_common_mistake_tested():
    """Each lesson's cases live in tests/test_exercises_lessonNN.py."""
    covered = set()
    for path in EXERCISES:
        cases = importlib.import_module(f"test_exercises_lesson{path.name[:2]}")
        covered |= {(lesson, number) for lesson, number, _, _ in cases.MISTAKES}
    for path in EXERCISES:
        for number in exercises_in(module_for(path)):
            assert (path.name[:2], number) in covered, (path.name, number)


def test_q2_tells_a_sessions_allow_list_from_the_functions_own_and_leaves_it_as_it_was():
    """add_safe_globals lasts for the whole session: the check tells a function that relies on an
    earlier call from one that works on its own, lets no call inside the function outlive it, and
    says why."""
    from cifar_course.exercises.lesson02 import q2
    from cifar_course.models import LessonNetSequential

    layers = [nn.Sequential, nn.Conv2d, nn.MaxPool2d, nn.Flatten, nn.Linear]
    before = torch.serialization.get_safe_globals()

    def adds_for_the_session(path):
        torch.serialization.add_safe_globals([LessonNetSequential, *layers])
        return torch.load(path, weights_only=True)

    feedback = q2.evaluate(adds_for_the_session)
    assert feedback.correct, feedback.message
    assert "allows those classes for every later load of this session" in feedback.message
    assert set(torch.serialization.get_safe_globals()) == set(before)

    torch.serialization.add_safe_globals([LessonNetSequential, *layers])  # an earlier cell
    try:
        kept = torch.serialization.get_safe_globals()
        feedback = q2.evaluate(lambda path: torch.load(path, weights_only=True))
        assert feedback.correct, feedback.message
        assert "works only because add_safe_globals, outside the function" in feedback.message
        feedback = q2.evaluate(lambda path: torch.load(path, weights_only=False))
        assert not feedback.correct  # still the mistake it was
        assert "loading a file ran a function" in feedback.message, feedback.message
        assert set(torch.serialization.get_safe_globals()) == set(kept)
    finally:
        torch.serialization.clear_safe_globals()
        torch.serialization.add_safe_globals(before)


def test_an_endless_loop_gets_not_yet_within_the_time_limit(monkeypatch):
    """A learner's endless loop does not hang the cell: each call runs under a time limit."""
    import time

    import cifar_course.exercises as exercises
    from cifar_course.exercises.lesson03 import q1

    monkeypatch.setattr(exercises, "TIME_LIMIT_S", 0.5)

    def accuracy(logits, labels):
        while True:
            pass

    began = time.monotonic()
    feedback = q1.evaluate(accuracy)
    assert time.monotonic() - began < 5
    assert not feedback.correct and "accuracy did not finish in 0.5 s" in feedback.message


def test_a_check_gives_the_session_back_as_it_found_it():
    """Random states come back as they were; a setting an answer changed for good is named and
    put back."""
    from cifar_course.exercises.lesson03 import q1
    from cifar_course.exercises.lesson07 import q2

    scope = namespace(next(p for p in EXERCISES if p.name.startswith("07")), answers=True)
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    assert q2.evaluate(scope["shares"]).correct  # the check seeds and draws numbers of its own
    assert torch.equal(torch.rand(3), expected)

    def accuracy(logits, labels):
        torch.set_default_dtype(torch.float64)
        return (logits.argmax(1) == labels).float().mean().item()

    feedback = q1.evaluate(accuracy)
    assert not feedback.correct and "changed the default dtype" in feedback.message
    assert torch.get_default_dtype() == torch.float32


def test_exit_and_a_changed_default_device_get_not_yet_and_leave_the_session_alone():
    import sys

    from cifar_course.exercises.lesson03 import q1

    feedback = q1.evaluate(lambda logits, labels: sys.exit())
    assert not feedback.correct and "called exit()" in feedback.message

    def accuracy(logits, labels):
        torch.set_default_device("meta")
        return (logits.argmax(1) == labels).float().mean().item()

    feedback = q1.evaluate(accuracy)
    assert not feedback.correct and "default device" in feedback.message
    assert torch.get_default_device() == torch.device("cpu")
    from torch.overrides import _get_current_function_mode_stack

    # and as it was: no device mode left behind, which would reach every later factory call
    assert _get_current_function_mode_stack() == []
    assert q1.evaluate(scope_free_accuracy).correct
    assert _get_current_function_mode_stack() == []


def scope_free_accuracy(logits, labels):
    return (logits.argmax(1) == labels).float().mean().item()
