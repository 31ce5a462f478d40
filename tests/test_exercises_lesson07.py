"""Lesson 07's exercise checks against answers a learner writes: each common mistake gets
``Not yet`` with the message that names it, and right answers written differently from the
reference solution get ``Correct``."""

import pytest
from exercise_cases import alternative_is_correct, mistake_gets_its_message

# (lesson, exercise, wrong answer, what the feedback must say)
MISTAKES = [
    (
        "07",
        "q1",
        """
        def average_gradients(per_process):
            return [sum(grads) for grads in zip(*per_process)]
        """,
        "an all-reduce sums; divide by the number of processes",
    ),
    (
        "07",
        "q1",
        """
        def average_gradients(per_process):
            return per_process[0]
        """,
        "differs from the gradient of the whole batch",
    ),
    (
        "07",
        "q2",
        """
        def shares(n, world_size, epoch, seed):
            order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
            order += order[: -(-n // world_size) * world_size - n]
            return [order[r::world_size] for r in range(world_size)]
        """,
        "epoch 0 and epoch 1 share the data in the same order",
    ),
    (
        "07",
        "q2",
        """
        def shares(n, world_size, epoch, seed):
            order = torch.randperm(n, generator=torch.Generator().manual_seed(seed + epoch))
            return [order[r::world_size].tolist() for r in range(world_size)]
        """,
        "each process must take the same number of steps",
    ),
    (
        "07",
        "q2",
        """
        def shares(n, world_size, epoch, seed):
            order = torch.randperm(n).tolist()
            order += order[: -(-n // world_size) * world_size - n]
            return [order[r::world_size] for r in range(world_size)]
        """,
        "two calls with the same arguments gave different shares",
    ),
    (
        "07",
        "q3",
        """
        def save_checkpoint(model, path, rank):
            torch.save(model.module.state_dict(), path)
        """,
        "rank 1 wrote a checkpoint too",
    ),
    (
        "07",
        "q3",
        """
        def save_checkpoint(model, path, rank):
            if rank == 0:
                torch.save(model.state_dict(), path)
        """,
        "the keys start with 'module.'",
    ),
    # found by the audit of 2026-11-28: each of these was marked correct, or got a wrong reason
    (
        "07",
        "q2",
        """
        def shares(n, world_size, epoch, seed):
            generator = torch.Generator().manual_seed(epoch)  # the seed is ignored
            order = torch.randperm(n, generator=generator).tolist()
            total = -(-n // world_size) * world_size
            order += order[: total - n]
            return [order[rank::world_size] for rank in range(world_size)]
        """,
        "seed 0 and seed 1 share the data in the same order",
    ),
    (
        "07",
        "q2",
        """
        def shares(n, world_size, epoch, seed):
            order = torch.randperm(n, generator=torch.Generator().manual_seed(seed + epoch))
            order = order[: n // world_size * world_size].tolist()  # the remainder dropped
            return [order[rank::world_size] for rank in range(world_size)]
        """,
        "repeat indices from the start rather than drop any",
    ),
    # issue 31: indices that are not whole numbers
    (
        "07",
        "q2",
        """
        def shares(n, world_size, epoch, seed):
            order = torch.randperm(n, generator=torch.Generator().manual_seed(seed + epoch))
            total = -(-n // world_size) * world_size
            order = torch.cat([order, order[: total - n]]).float() + 0.5
            return [order[rank::world_size].tolist() for rank in range(world_size)]
        """,
        "each share should be a list of indices (ints); one holds",
    ),
    (
        "07",
        "q2",
        """
        def shares(n, world_size, epoch, seed):
            order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1000 + epoch))
            total = -(-n // world_size) * world_size
            order = torch.cat([order, torch.full((total - n,), -1)])
            return [order[rank::world_size].tolist() for rank in range(world_size)]
        """,
        "outside 0..9: pad by repeating indices",
    ),
]

# (lesson, a right answer written differently)
ALTERNATIVES = [
    (
        "07",
        """
        def shares(n, world_size, epoch, seed):  # contiguous blocks: another fair split
            order = torch.randperm(n, generator=torch.Generator().manual_seed(seed + epoch))
            size = -(-n // world_size)
            order = torch.cat([order, order[: size * world_size - n]]).tolist()
            return [order[r * size : (r + 1) * size] for r in range(world_size)]
        """,
    ),
    (
        "07",
        """
        def average_gradients(per_process):
            return [torch.stack(grads).mean(0) for grads in zip(*per_process)]
        """,
    ),
    (
        "07",
        """
        def shares(n, world_size, epoch, seed):
            generator = torch.Generator().manual_seed(seed + epoch)
            order = torch.randperm(n, generator=generator)
            total = -(-n // world_size) * world_size
            order = torch.cat([order, order[: total - n]])
            return [order[rank::world_size] for rank in range(world_size)]  # tensors, not lists
        """,
    ),
    (
        "07",
        """
        def shares(n, world_size, epoch, seed):
            order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1000 + epoch))
            total = -(-n // world_size) * world_size
            order = torch.cat([order, order[: total - n]])
            return order.view(-1, world_size).T  # one row per process
        """,
    ),
]


@pytest.mark.parametrize(("lesson", "number", "answer", "expected"), MISTAKES)
def test_each_common_mistake_gets_its_own_message(lesson, number, answer, expected):
    mistake_gets_its_message(lesson, number, answer, expected)


@pytest.mark.parametrize(("lesson", "answer"), ALTERNATIVES)
def test_right_answers_written_differently_are_correct(lesson, answer):
    alternative_is_correct(lesson, answer)
