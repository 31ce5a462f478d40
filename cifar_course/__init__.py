"""cifar-course: the helpers behind the notebooks. Data, models, training, checkpoints, plots."""

from .data import CIFAR10, CLASSES, TensorData, by_mode, get_datasets, smoke_mode
from .errors import CourseError
from .models import LessonNet, LessonNetSequential, copy_weights, count_parameters

__version__ = "0.1.0"
# Where the course lives. The notebooks' Colab badges and setup cells repeat it; a test checks.
REPO_URL = "https://github.com/cifar-course/cifar-course"
__all__ = [
    "REPO_URL",
    "CIFAR10",
    "CLASSES",
    "CourseError",
    "LessonNet",
    "LessonNetSequential",
    "TensorData",
    "by_mode",
    "copy_weights",
    "count_parameters",
    "get_datasets",
    "smoke_mode",
]
