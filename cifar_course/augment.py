"""Data augmentation on whole batches, and the learning-rate schedules of the in-memory recipes.

Random flips and shifts (lesson 06), alternating flips (lesson 08), and the triangular schedule
both recipes ramp their learning rate with. Every random draw takes an explicit
``torch.Generator``, so that a seed gives the same images on every device and after a resume.
"""

from __future__ import annotations

import torch
from torch import nn


def augment(images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random horizontal flip and a random shift of up to 2 pixels (reflect-padded), per image."""
    flip = torch.rand(len(images), generator=generator) < 0.5
    images = torch.where(flip.to(images.device).view(-1, 1, 1, 1), images.flip(3), images)
    return translate(images, generator)


def draw_shifts(
    n: int, generator: torch.Generator | None, device: torch.device | str
) -> torch.Tensor:
    """Random shifts ``[n, 2]`` (0 to 4 pixels, down and right, of a 2-pixel reflect padding) for
    ``n`` images, drawn on the CPU, so that a seed gives the same images everywhere, and copied
    to ``device``: from pinned memory on a GPU, without making the CPU wait for it. Drawing an
    epoch's shifts at once gives the very numbers drawn batch by batch."""
    shifts = torch.randint(0, 5, (n, 2), generator=generator)
    if torch.device(device).type == "cuda":
        return shifts.pin_memory().to(device, non_blocking=True)
    return shifts.to(device)


def translate(
    images: torch.Tensor,
    generator: torch.Generator | None = None,
    shifts: torch.Tensor | None = None,
) -> torch.Tensor:
    """Shift each image by a random 0 to 2 pixels in each direction (reflect-padded).

    One gather for the whole batch, with no loop over the 25 possible shifts. The shifts come
    from ``draw_shifts``, unless ``shifts`` ``[n, 2]`` gives them, drawn already (for a whole
    epoch at once, in the speed-run recipe).
    """
    n, device = len(images), images.device
    padded = nn.functional.pad(images, (2, 2, 2, 2), mode="reflect")
    if shifts is None:
        shifts = draw_shifts(n, generator, device)
    pixels = torch.arange(32, device=device)
    rows = (shifts[:, 0, None] + pixels)[:, None, :, None]  # [n, 1, 32, 1]
    cols = (shifts[:, 1, None] + pixels)[:, None, None, :]  # [n, 1, 1, 32]
    batch = torch.arange(n, device=device)[:, None, None, None]
    channels = torch.arange(images.shape[1], device=device)[None, :, None, None]
    out = padded[batch, channels, rows, cols]
    if images.is_contiguous(memory_format=torch.channels_last) and not images.is_contiguous():
        return out.contiguous(memory_format=torch.channels_last)
    return out


def alternating_flip(base: torch.Tensor, epoch: int) -> torch.Tensor:
    """Which images to mirror in ``epoch`` (0-based), given a random choice ``base`` for epoch 0.

    Random flips show an image the same way in two consecutive epochs half of the time. Here every
    image is flipped in every other epoch, so each pair of epochs shows both versions once.
    """
    return base if epoch % 2 == 0 else ~base


def triangular_lr(
    step: int,
    total: int,
    peak: float,
    warmup: float = 0.2,
    start: float = 0.0,
    end: float = 0.0,
) -> float:
    """Learning rate at ``step``: linear from ``start * peak`` to ``peak`` over the first
    ``warmup`` of training, then linearly down to ``end * peak`` (by default from 0 and to 0)."""
    rise = max(1, int(total * warmup))
    if step < rise:
        return peak * (start + (1 - start) * step / rise)
    return peak * (end + (1 - end) * max(0.0, (total - step) / max(1, total - rise)))
