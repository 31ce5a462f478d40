"""Matplotlib figures for the lessons: samples, curves, confusion matrix, probabilities."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure
from PIL import Image

from .data import CLASSES


def show_images(
    images: torch.Tensor | np.ndarray,
    labels: Sequence[int],
    predicted: Sequence[int] | None = None,
    ncols: int = 8,
) -> Figure:
    """A grid of images (``[N,3,H,W]`` floats in [0,1] or uint8) titled with their class names.

    With ``predicted``, titles show ``true / predicted`` and wrong ones are red.
    """
    images = torch.as_tensor(np.asarray(images)) if not isinstance(images, torch.Tensor) else images
    if images.dtype == torch.uint8:
        images = images.float() / 255
    n = len(images)
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(1.6 * ncols, 1.8 * nrows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= n:
            continue
        ax.imshow(images[i].permute(1, 2, 0).clamp(0, 1).cpu().numpy())
        title = CLASSES[int(labels[i])]
        color = "black"
        if predicted is not None:
            title = f"{title} / {CLASSES[int(predicted[i])]}"
            color = "green" if int(predicted[i]) == int(labels[i]) else "red"
        ax.set_title(title, fontsize=8, color=color)
    fig.tight_layout()
    return fig


def plot_history(history: Sequence[dict[str, float]]) -> Figure:
    """Train and test loss per epoch (left) and test accuracy per epoch (right)."""
    epochs = [h["epoch"] for h in history]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.5))
    left.plot(epochs, [h["train_loss"] for h in history], "o-", label="train loss")
    left.plot(epochs, [h["test_loss"] for h in history], "s-", label="test loss")
    left.set_xlabel("epoch")
    left.set_ylabel("cross-entropy")
    left.legend()
    right.plot(epochs, [100 * h["test_accuracy"] for h in history], "o-", color="tab:green")
    right.axhline(10, color="gray", linestyle=":", label="chance (10%)")
    right.set_xlabel("epoch")
    right.set_ylabel("test accuracy (%)")
    right.legend()
    for ax in (left, right):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def confusion_matrix(
    predicted: torch.Tensor, targets: torch.Tensor, num_classes: int = 10
) -> torch.Tensor:
    """Counts ``[true class, predicted class]``."""
    index = targets.long() * num_classes + predicted.long()
    return torch.bincount(index, minlength=num_classes**2).reshape(num_classes, num_classes)


def plot_confusion_matrix(predicted: torch.Tensor, targets: torch.Tensor) -> Figure:
    """A confusion matrix with counts in the cells; rows are true classes."""
    matrix = confusion_matrix(predicted, targets).numpy()
    fig, ax = plt.subplots(figsize=(7, 6))
    im = ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(CLASSES)), CLASSES, rotation=45, ha="right")
    ax.set_yticks(range(len(CLASSES)), CLASSES)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    threshold = matrix.max() / 2
    for (i, j), count in np.ndenumerate(matrix):
        ax.text(
            j,
            i,
            str(count),
            ha="center",
            va="center",
            fontsize=7,
            color="white" if count > threshold else "black",
        )
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    return fig


def plot_probabilities(
    probabilities: Sequence[float] | torch.Tensor,
    image: Image.Image | None = None,
    title: str = "",
) -> Figure:
    """A bar chart of the 10 class probabilities, beside the image when one is given."""
    probs = np.asarray(torch.as_tensor(probabilities).flatten().tolist())
    if image is not None:
        fig, (left, ax) = plt.subplots(1, 2, figsize=(9, 3), gridspec_kw={"width_ratios": [1, 1.6]})
        left.imshow(image)
        left.axis("off")
        left.set_title(title, fontsize=9)
    else:
        fig, ax = plt.subplots(figsize=(6, 3))
        ax.set_title(title, fontsize=9)
    colors = ["tab:orange" if i == probs.argmax() else "tab:blue" for i in range(len(probs))]
    ax.barh(CLASSES, probs, color=colors)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("probability")
    fig.tight_layout()
    return fig
