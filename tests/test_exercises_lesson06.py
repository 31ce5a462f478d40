"""Lesson 06's exercise checks against answers a learner writes: each common mistake gets
``Not yet`` with the message that names it, and right answers written differently from the
reference solution get ``Correct``."""

import pytest
from exercise_cases import alternative_is_correct, mistake_gets_its_message

# (lesson, exercise, wrong answer, what the feedback must say)
MISTAKES = [
    (
        "06",
        "q1",
        """
        def conv_block(c_in, c_out):
            return nn.Sequential(
                nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
                nn.ReLU(), nn.BatchNorm2d(c_out),
            )
        """,
        "your block is Conv2d -> ReLU -> BatchNorm2d",
    ),
    (
        "06",
        "q1",
        """
        def conv_block(c_in, c_out):
            return nn.Sequential(
                nn.Conv2d(c_in, c_out, 3, padding=1),
                nn.BatchNorm2d(c_out), nn.ReLU(),
            )
        """,
        "pass bias=False",
    ),
    (
        "06",
        "q1",
        """
        def conv_block(c_in, c_out):
            return nn.Sequential(
                nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
                nn.BatchNorm2d(c_in), nn.ReLU(),
            )
        """,
        "BatchNorm2d(3) follows a convolution with 16 output channels",
    ),
    (
        "06",
        "q1",
        """
        def conv_block(c_in, c_out):
            return nn.Sequential(
                nn.Conv2d(c_in, c_out, 3, bias=False),
                nn.BatchNorm2d(c_out), nn.ReLU(),
            )
        """,
        "use kernel_size=3, padding=1",
    ),
    (
        "06",
        "q2",
        """
        def triangular_lr(step, total, peak, warmup=0.2):
            return peak * step / total
        """,
        "at step 1 of 100 (peak 0.4, warm-up 20%) you return 0.004; the schedule gives 0.02",
    ),
    (
        "06",
        "q2",
        """
        def triangular_lr(step, total, peak, warmup=0.2):
            rise = int(total * warmup)
            return peak * step / rise if step < rise else peak * (total - step) / total
        """,
        "at step 20 of 100 (peak 0.4, warm-up 20%) you return 0.32; the schedule gives 0.4",
    ),
    (
        "06",
        "q3",
        """
        def smooth_targets(labels, num_classes, smoothing):
            targets = torch.full((len(labels), num_classes), smoothing / (num_classes - 1))
            targets[torch.arange(len(labels)), labels] = 1 - smoothing
            return targets
        """,
        "PyTorch spreads the 0.2 over all 10 classes, the true one included",
    ),
    (
        "06",
        "q3",
        """
        def smooth_targets(labels, num_classes, smoothing):
            return nn.functional.one_hot(labels, num_classes).float()
        """,
        "your true class gets 1 and the others 0",
    ),
    (
        "06",
        "q2",
        """
        def triangular_lr(step, total, peak, warmup=0.2):
            rise = total * warmup  # not a whole number of steps
            if step < rise:
                return peak * step / rise
            return peak * max(0.0, (total - step) / max(1, total - rise))
        """,
        "the warm-up lasts int(total * warmup) steps, and at least one",
    ),
    (
        "06",
        "q2",
        """
        def triangular_lr(step, total, peak, warmup=0.2):
            rise = int(total * warmup)  # 0 for a short run
            if step < rise:
                return peak * step / rise
            return peak * max(0.0, (total - step) / max(1, total - rise))
        """,
        "Here total x warmup = 0.6",
    ),
    (
        "06",
        "q1",
        """
        def conv_block(c_in, c_out):
            return nn.Sequential(
                nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out),
                nn.ReLU(), nn.MaxPool2d(2),
            )
        """,
        "the order is right, but the block is the three layers only; drop MaxPool2d",
    ),
    # issue 31: the wrong BatchNorm, round() for int(), one_hot without num_classes
    (
        "06",
        "q1",
        """
        def conv_block(c_in, c_out):
            return nn.Sequential(
                nn.Conv2d(c_in, c_out, kernel_size=3, padding=1, bias=False),
                nn.BatchNorm1d(c_out),
                nn.ReLU(),
            )
        """,
        "a Conv2d's output, [N, C, H, W], needs BatchNorm2d",
    ),
    (
        "06",
        "q2",
        """
        def triangular_lr(step, total, peak, warmup=0.2):
            rise = max(1, round(total * warmup))
            if step < rise:
                return peak * step / rise
            return peak * max(0.0, (total - step) / max(1, total - rise))
        """,
        "Here total x warmup = 3.7",
    ),
    (
        "06",
        "q3",
        """
        def smooth_targets(labels, num_classes, smoothing):
            return nn.functional.one_hot(labels).float() * (1 - smoothing) + smoothing / num_classes
        """,
        "pass num_classes",
    ),
    (
        "06",
        "q1",
        """
        def conv_block(c_in, c_out):
            return nn.Sequential(
                nn.Conv2d(c_in, c_out, 3, padding="same", dilation=2, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(),
            )
        """,
        "the convolution has dilation 2",
    ),
]

# (lesson, a right answer written differently)
ALTERNATIVES = [
    (
        "06",
        """
        def conv_block(c_in, c_out):
            return nn.Sequential(
                nn.Conv2d(c_in, c_out, 3, padding="same", bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
            )
        """,
    ),
    # issue 31: the wrong BatchNorm, round() for int(), one_hot without num_classes
    (
        "06",
        """
        def conv_block(c_in, c_out):
            return nn.Sequential(
                nn.Conv2d(c_in, c_out, 3, padding="same", bias=False),
                nn.LazyBatchNorm2d(),
                nn.ReLU(inplace=True),
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
