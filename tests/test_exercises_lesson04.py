"""Lesson 04's exercise checks against answers a learner writes: each common mistake gets
``Not yet`` with the message that names it, and right answers written differently from the
reference solution get ``Correct``."""

import pytest
from exercise_cases import alternative_is_correct, mistake_gets_its_message

# (lesson, exercise, wrong answer, what the feedback must say)
MISTAKES = [
    (
        "04",
        "q1",
        """
        def to_device(model, images, labels, device):
            model.to(device)
            images.to(device)
            labels.to(device)
            return model, images, labels
        """,
        "images is still on cpu, not meta: Tensor.to returns a new tensor",
    ),
    (
        "04",
        "q1",
        """
        def to_device(model, images, labels, device):
            return model.to(device), images.to(device), labels.to(device, torch.float32)
        """,
        "keeping torch.long",
    ),
    (
        "04",
        "q2",
        """
        def time_op(run, sync, warmup=3, repeats=10):
            for _ in range(warmup):
                run()
            sync()
            start = time.perf_counter()
            for _ in range(repeats):
                run()
            return (time.perf_counter() - start) / repeats
        """,
        "the clock stopped before the work finished. Call sync(), then read the clock",
    ),
    (
        "04",
        "q2",
        """
        def time_op(run, sync, warmup=3, repeats=10):
            start = time.perf_counter()
            for _ in range(repeats):
                run()
            sync()
            return (time.perf_counter() - start) / repeats
        """,
        "expected 3 warm-up calls and 10 timed ones",
    ),
    (
        "04",
        "q2",
        """
        def time_op(run, sync, warmup=3, repeats=10):
            for _ in range(warmup):
                run()
            start = time.perf_counter()
            for _ in range(repeats):
                run()
            sync()
            return (time.perf_counter() - start) / repeats
        """,
        "nothing waits for the 3 warm-up calls to finish",
    ),
    (
        "04",
        "q2",
        """
        def time_op(run, sync, warmup=3, repeats=10):
            for _ in range(warmup):
                run()
            sync()
            start = time.perf_counter()
            for _ in range(repeats):
                run()
            sync()
            return time.perf_counter() - start
        """,
        "the time of all 10 calls; divide by repeats",
    ),
    (
        "04",
        "q3",
        """
        def choose_device():
            return 'cuda'
        """,
        "on a machine with an Apple GPU you chose 'cuda'; expected 'mps'",
    ),
    (
        "04",
        "q3",
        """
        def choose_device():
            return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
        """,
        "you chose 'cpu'; expected 'mps'",
    ),
    (
        "04",
        "q2",
        """
        def time_op(run, sync, warmup=3, repeats=10):
            for _ in range(warmup):
                run()
            sync()
            start = time.perf_counter()
            for _ in range(repeats):
                run()
            sync()
            return 1000 * (time.perf_counter() - start) / repeats
        """,
        "that looks like milliseconds; return seconds",
    ),
    (
        "04",
        "q2",
        """
        def time_op(run, sync, warmup=3, repeats=10):
            for _ in range(warmup):
                run()
            sync()
            start = time.perf_counter()
            for _ in range(repeats):
                run()
            sync()
            return (time.perf_counter() - start) / (warmup + repeats)
        """,
        "Divide the time of the timed calls by their number",
    ),
    (
        "04",
        "q2",
        """
        def time_op(run, sync, warmup=3, repeats=10):
            for _ in range(warmup):
                run()
            sync()
            start = time.perf_counter()
            for _ in range(repeats):
                run()
            stop = time.perf_counter()
            sync()
            return (stop - start) / repeats
        """,
        "the clock stopped before the work finished",
    ),
    # issue 31: weights kept in the move, counts from the arguments, the clock after the warm-up
    (
        "04",
        "q1",
        """
        def to_device(model, images, labels, device):
            return model.to_empty(device=device), images.to(device), labels.to(device)
        """,
        "holds other values after the move",
    ),
    (
        "04",
        "q2",
        """
        def time_op(run, sync, warmup=3, repeats=10):
            for _ in range(3):
                run()
            sync()
            start = time.perf_counter()
            for _ in range(10):
                run()
            sync()
            return (time.perf_counter() - start) / 10
        """,
        "use the arguments, not fixed numbers",
    ),
    (
        "04",
        "q2",
        """
        def time_op(run, sync, warmup=3, repeats=10):
            start = time.perf_counter()
            for _ in range(warmup):
                run()
            sync()
            for _ in range(repeats):
                run()
            sync()
            return (time.perf_counter() - start) / repeats
        """,
        "the clock started before the warm-up",
    ),
    # issue 31, second attack
    (
        "04",
        "q1",
        """
        def to_device(model, images, labels, device):
            device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
            return model.to(device), images.to(device), labels.to(device)
        """,
        "move to the device you are given, the argument device",
    ),
    (
        "04",
        "q1",
        """
        def to_device(model, images, labels, device):
            return model.to(device), images.to(device, torch.float16), labels.to(device)
        """,
        "images became torch.float16",
    ),
    (
        "04",
        "q2",
        """
        def time_op(run, sync, warmup=3, repeats=10):
            for _ in range(warmup):
                run()
            sync()
            start = time.perf_counter()
            for _ in range(repeats):
                run()
            sync()
            return (time.perf_counter() - start) / (repeats - 1)
        """,
        "divided by 3; divide by repeats",
    ),
    (
        "04",
        "q3",
        """
        def choose_device():
            if torch.cuda.is_available():
                return "cuda"
            if torch.backends.mps.is_built():
                return "mps"
            return "cpu"
        """,
        "with a PyTorch built for Apple GPUs you chose 'mps'",
    ),
]

# (lesson, a right answer written differently)
ALTERNATIVES = [
    (
        "04",
        """
        def to_device(model, images, labels, device):
            return [model.to(device), images.to(device), labels.to(device)]
        """,
    ),
    (
        "04",
        """
        def time_op(run, sync, warmup=3, repeats=10):
            for _ in range(warmup):
                run()
                sync()
            start = time.perf_counter()
            for _ in range(repeats):
                run()
            sync()
            return (time.perf_counter() - start) / repeats
        """,
    ),
    (
        "04",
        """
        def choose_device():
            if torch.cuda.is_available():
                return "cuda"
            if torch.backends.mps.is_available() and torch.backends.mps.is_built():
                return "mps"
            return "cpu"
        """,
    ),
    (
        "04",
        """
        def choose_device():
            return torch.accelerator.current_accelerator() or torch.device("cpu")
        """,
    ),
    # issue 31: weights kept in the move, counts from the arguments, the clock after the warm-up
    (
        "04",
        """
        def to_device(model, images, labels, device):
            for p in model.parameters():
                p.data = p.data.to(device)
            return model, images.to(device), labels.to(device)
        """,
    ),
    (
        "04",
        """
        def choose_device():
            if torch.cuda.device_count() > 0:
                return "cuda"
            if torch.mps.is_available():
                return "mps"
            return "cpu"
        """,
    ),
    (
        "04",
        """
        def choose_device():
            if torch.accelerator.device_count() > 0:
                return torch.accelerator.current_accelerator()
            return torch.device("cpu")
        """,
    ),
]


@pytest.mark.parametrize(("lesson", "number", "answer", "expected"), MISTAKES)
def test_each_common_mistake_gets_its_own_message(lesson, number, answer, expected):
    mistake_gets_its_message(lesson, number, answer, expected)


@pytest.mark.parametrize(("lesson", "answer"), ALTERNATIVES)
def test_right_answers_written_differently_are_correct(lesson, answer):
    alternative_is_correct(lesson, answer)
