"""The training recipes behind ``cifar-course train --recipe NAME``, one module each.

Each module reads top to bottom like a speed-run's training script: its hyper-parameters as one
dataclass (the only home of its defaults), its network and optimizer, and its ``train_epoch``.
``cifar_course.engine.fit`` runs any of them. This package imports none of them until asked,
so that ``cifar-course --help`` stays quick.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..engine import Recipe

NAMES = ("lecture", "modern", "speedrun")  # in the order the lessons teach them


def get(name: str) -> type[Recipe]:
    """The recipe called ``name`` (one of ``NAMES``)."""
    if name not in NAMES:
        raise ValueError(f"unknown recipe {name!r}; the recipes are {', '.join(NAMES)}")
    return importlib.import_module(f"{__name__}.{name}").RECIPE  # type: ignore[no-any-return]
