"""Testing a model: predictions, loss and accuracy, per class, and with test-time augmentation."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import TextIO

import torch
from torch import nn

# Text progress bars: a notebook widget leaves "model not found" behind once saved and reopened.
from tqdm import tqdm

from .data import TensorData

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]


def progress_stream() -> TextIO:
    """Where the package's progress bars write: stdout in a Jupyter kernel (whose stdout is
    ipykernel's stream), where stderr would leave an empty pink band in the notebook once a bar
    with ``leave=False`` clears itself; stderr elsewhere, so that the command line's results
    alone go to stdout."""
    in_kernel = type(sys.stdout).__module__.startswith("ipykernel")
    return sys.stdout if in_kernel else sys.stderr


@torch.no_grad()
def predict_all(
    model: nn.Module, batches: Batches, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Run ``model`` over ``batches``; return ``(logits, predictions, targets)`` on the CPU."""
    model.eval()
    all_logits, all_targets = [], []
    for images, targets in tqdm(batches, desc="test", leave=False, file=progress_stream()):
        all_logits.append(model(images.to(device)).float().cpu())
        all_targets.append(targets.cpu())
    logits = torch.cat(all_logits)
    return logits, logits.argmax(1), torch.cat(all_targets)


def loss_and_accuracy(
    model: nn.Module, batches: Batches, loss_fn: nn.Module, device: torch.device
) -> tuple[float, float]:
    """Return ``(mean test loss, accuracy in [0, 1])`` of ``model`` on ``batches``."""
    logits, predicted, targets = predict_all(model, batches, device)
    loss = loss_fn(logits, targets).item()
    return loss, (predicted == targets).float().mean().item()


def per_class_accuracy(
    predicted: torch.Tensor, targets: torch.Tensor, num_classes: int = 10
) -> list[float]:
    """Accuracy of each class, in class order."""
    return [
        (predicted[targets == c] == c).float().mean().item()
        if (targets == c).any()
        else float("nan")
        for c in range(num_classes)
    ]


# evaluate_tta's views, and the names their accuracies take in a training run's history
TTA_KEYS = {
    "plain": "test_accuracy",
    "flip": "test_accuracy_flip",
    "flip_shift": "test_accuracy_tta",
}


def _flip_average(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    return (model(images) + model(images.flip(3))) / 2


@torch.no_grad()
def evaluate_tta(
    model: nn.Module, data: TensorData, batch_size: int = 1000, tta: bool = True
) -> dict[str, float]:
    """Test accuracy on ``data`` three ways, in one pass over it (only the first if not ``tta``).

    - ``"plain"``: each image once;
    - ``"flip"``: the average of the scores of the image and its mirror image (2 passes);
    - ``"flip_shift"``: that average, averaged again with the one of the image shifted by one
      pixel up-left and the one shifted one pixel down-right (reflect-padded; 6 passes), as in
      airbench. Half the weight stays on the unshifted image.
    """
    model.eval()
    correct: dict[str, int] = {}
    for images, targets in data.batches(batch_size, channels_last=True):
        views = {"plain": model(images)}
        if tta:
            views["flip"] = (views["plain"] + model(images.flip(3))) / 2
            padded = nn.functional.pad(images, (1, 1, 1, 1), mode="reflect")
            shifted = (
                _flip_average(model, padded[:, :, :32, :32])
                + _flip_average(model, padded[:, :, 2:, 2:])
            ) / 2
            views["flip_shift"] = (views["flip"] + shifted) / 2
        for name, logits in views.items():
            correct[name] = correct.get(name, 0) + int((logits.argmax(1) == targets).sum())
    return {name: hits / len(data) for name, hits in correct.items()}


def tta_report(history: list[dict[str, float]]) -> list[str]:
    """The last lines of a run whose last epoch was tested with ``evaluate_tta``: its training
    time and its final accuracies."""
    last = history[-1]
    lines = [f"training time {sum(h['seconds'] for h in history):.1f} s"]
    if "test_accuracy_tta" in last:
        lines.append(
            f"final test accuracy: {last['test_accuracy_tta']:.2%} (with flip-and-shift TTA; "
            f"{last['test_accuracy_flip']:.2%} with flip TTA, {last['test_accuracy']:.2%} without)"
        )
    else:  # resumed from a run that had already finished, or from an older checkpoint
        lines.append(f"final test accuracy: {last['test_accuracy']:.2%} (without TTA)")
    return lines
