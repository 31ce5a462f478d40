"""Lessons 06 and 08 write their training steps out, to take them apart trick by trick; the
package's recipes run the same steps for ``cifar-course train``. These tests run each lesson's
own ``train()``, read from the notebook, with the settings its last step uses, and the package's
recipe with the same settings, for one epoch of the smoke slice from the same seed: the weights
must come out identical, so that the lesson teaches what the command line runs."""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

import pytest
import torch

import cifar_course
from cifar_course.data import TensorData
from cifar_course.engine import seed_everything
from cifar_course.models import ModernNet
from cifar_course.recipes.modern import Modern, ModernHyper
from cifar_course.recipes.speedrun import WHITEN_IMAGES, Speedrun, SpeedrunHyper

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
CPU = torch.device("cpu")


def code_cells(lesson: str) -> list[ast.Module]:
    """The code cells of ``notebooks/<lesson>.ipynb``, parsed (magics and shell lines left out)."""
    cells = json.loads((NOTEBOOKS / f"{lesson}.ipynb").read_text())["cells"]
    parsed = []
    for cell in cells:
        if cell["cell_type"] == "code":
            lines = "".join(cell["source"]).splitlines()
            parsed.append(ast.parse("\n".join(x for x in lines if not x.startswith(("%", "!")))))
    return parsed


def run_statements(nodes: list[ast.stmt], namespace: dict[str, Any]) -> None:
    exec(compile(ast.Module(body=nodes, type_ignores=[]), "<notebook>", "exec"), namespace)


def lesson_train(lesson: str, namespace: dict[str, Any]) -> Any:
    """The lesson's ``train`` function, defined in ``namespace`` after the imports of its cell
    and of the cells before it."""
    for cell in code_cells(lesson):
        run_statements(
            [n for n in cell.body if isinstance(n, (ast.Import, ast.ImportFrom))], namespace
        )
        if any(isinstance(n, ast.FunctionDef) and n.name == "train" for n in cell.body):
            run_statements([n for n in cell.body if isinstance(n, ast.FunctionDef)], namespace)
            return namespace["train"]
    raise AssertionError(f"{lesson} defines no train()")


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    mine, theirs = a.state_dict(), b.state_dict()
    assert mine.keys() == theirs.keys()
    different = [k for k, v in mine.items() if not torch.equal(v, theirs[k])]
    assert not different, different


def package_epoch(recipe_type: type, hyper: Any) -> torch.nn.Module:
    """The package's recipe, built and trained for its first epoch as ``engine.fit`` does."""
    seed_everything(0)
    recipe = recipe_type(hyper.resolved("cpu"), CPU, None, 0, lambda line: None)
    recipe.start(None)
    recipe.train_epoch(0, None)
    return recipe.tested


@pytest.mark.slow
def test_lesson_06s_train_is_the_modern_recipe(data_root):
    train_data = TensorData(True)
    namespace = {
        "cifar_course": cifar_course,
        "device": CPU,
        "train_data": train_data,
        "test_data": TensorData(False, limit=100),
        "epochs": 1,
        "results": [],
        "big_batch": 64,
    }
    train = lesson_train("06_faster_and_better", namespace)
    for cell in code_cells("06_faster_and_better"):  # the settings of its last steps
        for node in cell.body:
            if isinstance(node, ast.Assign) and ast.unparse(node.targets[0]) == "modern_recipe":
                run_statements([node], namespace)
    settings = namespace["modern_recipe"]
    hyper = ModernHyper(epochs=1, batch_size=settings["batch_size"], lr=settings["lr"])
    assert settings["momentum"] == hyper.momentum and settings["nesterov"]
    assert settings["weight_decay"] == hyper.weight_decay
    assert settings["label_smoothing"] == hyper.label_smoothing
    assert settings["augmented"] and settings["schedule"]
    lesson = train("as lesson 06", ModernNet, **settings)
    same_weights(lesson, package_epoch(Modern, hyper))


@pytest.mark.slow
def test_lesson_08s_train_with_all_its_tricks_is_the_speedrun_recipe(data_root):
    train_data = TensorData(True)
    first = torch.arange(min(len(train_data), WHITEN_IMAGES))
    namespace = {
        "cifar_course": cifar_course,
        "device": CPU,
        "train_data": train_data,
        "test_data": TensorData(False, limit=100),
        "whiten_images": train_data.batch(first)[0],
        "epochs": 1,
        "batch_size": 64,
        "bf16": False,  # the comparison runs in fp32: bit for bit
        "results": [],
    }
    train = lesson_train("08_speedrun", namespace)
    tricks: dict[str, Any] = {}  # each step keeps the tricks of the steps before it
    for cell in code_cells("08_speedrun"):
        for node in ast.walk(cell):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "step":
                tricks.update({k.arg: ast.literal_eval(k.value) for k in node.keywords})
    assert tricks and all(tricks.values()) and not tricks.get("average")
    lesson = train("as lesson 08", **tricks)
    hyper = SpeedrunHyper(epochs=1, batch_size=64, precision="fp32", lookahead=tricks["lookahead"])
    same_weights(lesson, package_epoch(Speedrun, hyper))
