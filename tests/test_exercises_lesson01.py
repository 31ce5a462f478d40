"""Lesson 01's exercise checks against answers a learner writes: each common mistake gets
``Not yet`` with the message that names it, and right answers written differently from the
reference solution get ``Correct``."""

import pytest
from exercise_cases import alternative_is_correct, mistake_gets_its_message

# (lesson, exercise, wrong answer, what the feedback must say)
MISTAKES = [
    (
        "01",
        "q1",
        """
        def conv_output_size(size, kernel_size, stride=1, padding=0):
            return (size + 2 * padding - kernel_size) // stride
        """,
        "for size=32, kernel_size=5, stride=1, padding=2 you return 31; PyTorch's Conv2d gives 32",
    ),
    (
        "01",
        "q1",
        """
        def conv_output_size(size, kernel_size, stride=1, padding=0):
            return (size + 2 * padding - kernel_size) / stride + 1
        """,
        "a float; sizes and counts are whole numbers: divide with //",
    ),
    (
        "01",
        "q1",
        """
        def conv_output_size(size, kernel_size, stride=1, padding=0):
            return size - kernel_size + 1
        """,
        "padding=2 you return 28; PyTorch's Conv2d gives 32",
    ),
    (
        "01",
        "q2",
        """
        shapes_64 = [
            (64, 32, 64, 64), (64, 32, 32, 32), (64, 32, 32, 32), (64, 32, 16, 16),
            (64, 64, 16, 16), (64, 64, 8, 8), (64, 1024),
        ]
        """,
        "after layer 7 (Flatten) the length in your [64, 1024] is not what the layer gives",
    ),
    (
        "01",
        "q2",
        """
        shapes_64 = [
            (32, 64, 64), (32, 32, 32), (32, 32, 32), (32, 16, 16),
            (64, 16, 16), (64, 8, 8), (4096,),
        ]
        """,
        "has no batch dimension: the 64 goes in front",
    ),
    (
        "01",
        "q3",
        """
        def build_net():
            return nn.Sequential(
                nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                nn.Flatten(), nn.Linear(1024, 10),
            )
        """,
        "mat1 and mat2 shapes cannot be multiplied (2x8192 and 1024x10)",
    ),
    (
        "01",
        "q3",
        """
        def build_net():
            return nn.Sequential(
                nn.Conv2d(3, 16, 3, padding=1), nn.MaxPool2d(2), nn.ReLU(),
                nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                nn.Flatten(), nn.Linear(8192, 10),
            )
        """,
        "layer 2 is MaxPool2d; the table has ReLU() there",
    ),
    (
        "01",
        "q3",
        """
        def build_net():
            return nn.Sequential(
                nn.Conv2d(3, 16, 3), nn.ReLU(), nn.MaxPool2d(2),
                nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                nn.Flatten(), nn.Linear(8192, 10),
            )
        """,
        "layer 1 is Conv2d(in_channels=3, out_channels=16, kernel_size=3, stride=1, padding=0)",
    ),
    (
        "01",
        "q4",
        """
        def conv_parameters(c_in, c_out, kernel_size, bias=True):
            return c_out * c_in * kernel_size * kernel_size
        """,
        "for Conv2d(3, 32, 5, bias=True) you return 2400; PyTorch's layer has 2,432",
    ),
    # found in review: wrong answers that once passed, or got the wrong reason
    (
        "01",
        "q3",
        """
        def build_net():
            return nn.Sequential(
                nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2, stride=1),
                nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                nn.Flatten(), nn.Linear(32 * 31 * 31, 10),
            )
        """,
        "layer 3 is MaxPool2d(kernel_size=2, stride=1)",
    ),
    (
        "01",
        "q3",
        """
        def build_net():
            return nn.Sequential(
                nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.ReLU(), nn.MaxPool2d(2),
                nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                nn.Flatten(), nn.Linear(8192, 10),
            )
        """,
        "layer 1 has no bias",
    ),
    # issue 31: settings outside the table, sizes with a fraction
    (
        "01",
        "q2",
        """
        shapes_64 = [
            (64, 32, 64, 64), (64, 32, 32, 32), (64, 32, 32, 32), (64, 32, 16, 16),
            (64, 64, 16, 16), (64, 64, 8, 8), (64, 4096.9),
        ]
        """,
        "write it as a tuple of whole numbers",
    ),
    (
        "01",
        "q3",
        """
        def build_net():
            return nn.Sequential(
                nn.Conv2d(3, 16, kernel_size=3, padding=1), nn.ReLU(), nn.MaxPool2d(2, padding=1),
                nn.Conv2d(16, 32, kernel_size=3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                nn.Flatten(), nn.Linear(32 * 17 * 17, 10),
            )
        """,
        "layer 3 sets padding=1 (the table leaves it at PyTorch's default, 0)",
    ),
    (
        "01",
        "q3",
        """
        def build_net():
            return nn.Sequential(
                nn.Conv2d(3, 16, kernel_size=3, padding=1, dilation=2), nn.ReLU(), nn.MaxPool2d(2),
                nn.Conv2d(16, 32, kernel_size=3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                nn.Flatten(), nn.Linear(32 * 15 * 15, 10),
            )
        """,
        "layer 1 sets dilation=(2, 2)",
    ),
]

# (lesson, a right answer written differently)
ALTERNATIVES = [
    (
        "01",
        """
        import numpy as np
        def conv_output_size(size, kernel_size, stride=1, padding=0):
            return np.int64((size + 2 * padding - kernel_size) // stride + 1)
        """,
    ),
    (
        "01",
        """
        def build_net():
            return nn.Sequential(
                nn.Conv2d(3, 16, 3, padding="same"), nn.ReLU(), nn.MaxPool2d(2),
                nn.Conv2d(16, 32, 3, padding="same"), nn.ReLU(), nn.MaxPool2d(2),
                nn.Flatten(), nn.Linear(8192, 10),
            )
        """,
    ),
    # issue 31: settings outside the table, sizes with a fraction
    (
        "01",
        """
        def build_net():
            return nn.Sequential(
                nn.Conv2d(3, 16, 3, padding="same"), nn.ReLU(inplace=True), nn.MaxPool2d(2, 2),
                nn.Conv2d(16, 32, 3, 1, 1), nn.ReLU(inplace=True), nn.MaxPool2d(kernel_size=2),
                nn.Flatten(), nn.Linear(8192, 10),
            )
        """,
    ),
]


@pytest.mark.parametrize(("lesson", "number", "answer", "expected"), MISTAKES)
def test_each_common_mistake_gets_its_own_message(lesson, number, answer, expected):
    mistake_gets_its_message(lesson, number, answer, expected)


@pytest.mark.parametrize(("lesson", "answer"), ALTERNATIVES)
def test_right_answers_written_differently_are_correct(lesson, answer):
    alternative_is_correct(lesson, answer)
