"""Lesson 08's exercise checks against answers a learner writes: each common mistake gets
``Not yet`` with the message that names it, and right answers written differently from the
reference solution get ``Correct``."""

import pytest
from exercise_cases import alternative_is_correct, mistake_gets_its_message

# (lesson, exercise, wrong answer, what the feedback must say)
MISTAKES = [
    (
        "08",
        "q1",
        """
        def whitening_filters(patches, eps):
            centred = patches - patches.mean(0)
            eigenvalues, eigenvectors = torch.linalg.eigh(centred.T @ centred / (len(patches) - 1))
            return eigenvectors.T
        """,
        "their variances are the eigenvalues",
    ),
    (
        "08",
        "q1",
        """
        def whitening_filters(patches, eps):
            centred = patches - patches.mean(0)
            eigenvalues, eigenvectors = torch.linalg.eigh(centred.T @ centred / (len(patches) - 1))
            return eigenvectors.T / (eigenvalues + eps)[:, None]
        """,
        "not by the eigenvalue itself",
    ),
    (
        "08",
        "q1",
        """
        def whitening_filters(patches, eps):
            centred = patches - patches.mean(0)
            eigenvalues, eigenvectors = torch.linalg.eigh(centred.T @ centred / (len(patches) - 1))
            return eigenvectors / torch.sqrt(eigenvalues + eps)[:, None]
        """,
        "The eigenvectors are the columns of what torch.linalg.eigh returns",
    ),
    (
        "08",
        "q1",
        """
        def whitening_filters(patches, eps):
            eigenvalues, eigenvectors = torch.linalg.eigh(patches.T @ patches / (len(patches) - 1))
            return eigenvectors.T / torch.sqrt(eigenvalues + eps)[:, None]
        """,
        "subtract patches.mean(0) before computing the covariance",
    ),
    (
        "08",
        "q1",
        """
        def whitening_filters(patches, eps):
            centred = patches - patches.mean(0)
            eigenvalues, eigenvectors = torch.linalg.eigh(centred.T @ centred / (len(patches) - 1))
            return eigenvectors.T / torch.sqrt(eigenvalues)[:, None]
        """,
        "add eps to each eigenvalue before the square root",
    ),
    (
        "08",
        "q2",
        """
        def flips_for_epoch(base, epoch):
            return base
        """,
        "epochs 0 and 1 mirror the same images",
    ),
    (
        "08",
        "q2",
        """
        def flips_for_epoch(base, epoch):
            return ~base if epoch % 2 == 0 else base
        """,
        "in epoch 0 mirror exactly the images of the first, random choice",
    ),
    (
        "08",
        "q2",
        """
        def flips_for_epoch(base, epoch):
            if epoch % 2 == 1:
                base.logical_not_()
            return base
        """,
        "your function changed base itself",
    ),
    (
        "08",
        "q2",
        """
        def flips_for_epoch(base, epoch):
            return base ^ (epoch % 2)
        """,
        "torch.where needs True/False (torch.bool)",
    ),
    (
        "08",
        "q2",
        """
        def flips_for_epoch(base, epoch):
            flipped = base.clone()
            flipped[: epoch % 2 * 250] ^= True  # only the first half changes side
            return flipped
        """,
        "only 250 of 500 images changed side",
    ),
    (
        "08",
        "q3",
        """
        @torch.no_grad()
        def ema_update(average, current, decay):
            for name, tensor in average.items():
                if tensor.is_floating_point():
                    tensor.mul_(1 - decay).add_(current[name], alpha=decay)
                else:
                    tensor.copy_(current[name])
        """,
        "decay is the share the average keeps",
    ),
    (
        "08",
        "q3",
        """
        def ema_update(average, current, decay):
            return {k: decay * v + (1 - decay) * current[k] for k, v in average.items()}
        """,
        "update its tensors in place",
    ),
    (
        "08",
        "q3",
        """
        @torch.no_grad()
        def ema_update(average, current, decay):
            for name, tensor in average.items():
                if "running" in name:  # BatchNorm's statistics left behind
                    continue
                if tensor.is_floating_point():
                    tensor.lerp_(current[name], 1 - decay)
                else:
                    tensor.copy_(current[name])
        """,
        "running_mean is not 0.9 * average + 0.1 * current",
    ),
    (
        "08",
        "q3",
        """
        @torch.no_grad()
        def ema_update(average, current, decay):
            for name, tensor in average.items():
                if tensor.is_floating_point():
                    tensor.lerp_(current[name], 1 - decay)
        """,
        "is a counter (integers), not a weight: copy it",
    ),
    (
        "08",
        "q3",
        """
        @torch.no_grad()
        def ema_update(average, current, decay):
            for name, tensor in average.items():
                tensor.lerp_(current[name], 1 - decay)
        """,
        "ema_update raised NotImplementedError",
    ),
    (
        "08",
        "q3",
        """
        @torch.no_grad()
        def ema_update(average, current, decay):
            for name, tensor in average.items():
                if tensor.is_floating_point():
                    current[name].lerp_(tensor, decay)
                    tensor.copy_(current[name])
                else:
                    tensor.copy_(current[name])
        """,
        "only the average should move",
    ),
    (
        "08",
        "q3",
        """
        @torch.no_grad()
        def ema_update(average, current, decay):
            for name, tensor in average.items():
                ____
        """,
        "ema_update still uses the blank ____",
    ),
    # issue 31: complex or diagonal filters, a fixed decay, the counter averaged
    (
        "08",
        "q1",
        """
        def whitening_filters(patches, eps):
            centred = patches - patches.mean(0)
            covariance = centred.T @ centred / (len(patches) - 1)
            eigenvalues, eigenvectors = torch.linalg.eig(covariance)
            return eigenvectors.T / torch.sqrt(eigenvalues + eps)[:, None]
        """,
        "your filters are complex numbers",
    ),
    (
        "08",
        "q1",
        """
        def whitening_filters(patches, eps):
            return torch.diag(1 / patches.std(0))
        """,
        "your filters are a diagonal matrix",
    ),
    (
        "08",
        "q3",
        """
        @torch.no_grad()
        def ema_update(average, current, decay):
            for name, tensor in average.items():
                if tensor.is_floating_point():
                    tensor.mul_(0.9).add_(current[name], alpha=0.1)
                else:
                    tensor.copy_(current[name])
        """,
        "use the decay you are given",
    ),
    (
        "08",
        "q3",
        """
        @torch.no_grad()
        def ema_update(average, current, decay):
            for name, tensor in average.items():
                tensor.mul_(decay).add_(current[name], alpha=1 - decay)
        """,
        "num_batches_tracked, a counter of integers",
    ),
    (
        "08",
        "q1",
        """
        def whitening_filters(patches, eps):
            centred = patches - patches.mean(0)
            eigenvalues, eigenvectors = torch.linalg.eigh(centred @ centred.T / (len(patches) - 1))
            return eigenvectors.T / torch.sqrt(eigenvalues.clamp_min(0) + eps)[:, None]
        """,
        "one row per patch",
    ),
    (
        "08",
        "q1",
        """
        def whitening_filters(patches, eps):
            centred = patches - patches.mean(1, keepdim=True)
            eigenvalues, eigenvectors = torch.linalg.eigh(centred.T @ centred / (len(patches) - 1))
            return eigenvectors.T / torch.sqrt(eigenvalues + eps)[:, None]
        """,
        "subtract the mean patch, patches.mean(0)",
    ),
]

# (lesson, a right answer written differently)
ALTERNATIVES = [
    (
        "08",
        """
        def whitening_filters(patches, eps):  # ZCA: rotated back, as white as the reference
            covariance = torch.cov(patches.T)
            eigenvalues, eigenvectors = torch.linalg.eigh(covariance)
            return eigenvectors @ torch.diag(1 / torch.sqrt(eigenvalues + eps)) @ eigenvectors.T
        """,
    ),
    (
        "08",
        """
        def flips_for_epoch(base, epoch):
            return base.logical_xor(torch.tensor(epoch % 2 == 1))
        """,
    ),
    (
        "08",
        """
        @torch.no_grad()
        def ema_update(average, current, decay):
            for name, tensor in average.items():
                if tensor.dtype.is_floating_point:
                    tensor.lerp_(current[name], 1 - decay)
                else:
                    tensor.copy_(current[name])
            return average
        """,
    ),
]


@pytest.mark.parametrize(("lesson", "number", "answer", "expected"), MISTAKES)
def test_each_common_mistake_gets_its_own_message(lesson, number, answer, expected):
    mistake_gets_its_message(lesson, number, answer, expected)


@pytest.mark.parametrize(("lesson", "answer"), ALTERNATIVES)
def test_right_answers_written_differently_are_correct(lesson, answer):
    alternative_is_correct(lesson, answer)
