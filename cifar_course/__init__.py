"""cifar-course: the helpers behind the notebooks. Data, models, training, checkpoints, plots.

The names below are imported on first use (PEP 562), so that ``cifar-course --help`` does not
wait for PyTorch to load; ``from cifar_course import LessonNet`` works as usual.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .errors import CourseError
from .i18n import language, set_language

if TYPE_CHECKING:
    from .data import CLASSES, CourseCIFAR10, TensorData, by_mode, get_datasets, smoke_mode
    from .models import LessonNet, LessonNetSequential, copy_weights, count_parameters

__version__ = "0.1.0"
# Where the course lives. The notebooks' Colab badges and setup cells repeat it; a test checks.
REPO_URL = "https://github.com/cifar-course/cifar-course"

_LAZY = {
    "CLASSES": "data",
    "CourseCIFAR10": "data",
    "TensorData": "data",
    "by_mode": "data",
    "get_datasets": "data",
    "smoke_mode": "data",
    "LessonNet": "models",
    "LessonNetSequential": "models",
    "copy_weights": "models",
    "count_parameters": "models",
}
__all__ = [
    "REPO_URL",
    "CLASSES",
    "CourseCIFAR10",
    "CourseError",
    "LessonNet",
    "LessonNetSequential",
    "TensorData",
    "by_mode",
    "copy_weights",
    "count_parameters",
    "get_datasets",
    "smoke_mode",
    "language",
    "set_language",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
