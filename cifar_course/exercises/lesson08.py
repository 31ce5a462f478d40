"""Exercises for lesson 08, the speed-run: whitening filters from patches, alternating flips, and
the moving average of the weights.

The patches come from the lesson's own photographs, shipped with the package, so the checks need
no CIFAR-10 download.
"""

from __future__ import annotations

from typing import Any

import torch
from PIL import Image

from ..inference import TO_INPUT, example_photos
from ..models import SpeedNetSmall
from . import Exercise, NotYet, ____, run_learner, shape_text, short

__all__ = ["____", "q1", "q2", "q3", "photo_patches"]


def photo_patches() -> torch.Tensor:
    """Every 2x2 patch of the lesson's photographs at 32x32, as rows of 12 numbers (float64)."""
    rows = []
    for path in example_photos().values():
        with Image.open(path) as image:
            pixels = TO_INPUT(image.convert("RGB")).unsqueeze(0)
        cols = torch.nn.functional.unfold(pixels, 2)  # [1, 12, 31*31]
        rows.append(cols[0].T)
    return torch.cat(rows).double()


def _covariance(rows: torch.Tensor) -> torch.Tensor:
    """The covariance of ``rows``' columns, the rows already centred."""
    return rows.T @ rows / (len(rows) - 1)


def _parallel_rows(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether each row of ``a`` points along the same row of ``b``, up to scale and sign."""
    cosine = (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1) + 1e-30)
    return bool((cosine.abs() > 0.999).all())


def _why_correlated(filters: torch.Tensor, patches: torch.Tensor) -> str:
    """Why the outputs of ``filters`` are still correlated, as advice."""
    if (filters - torch.diag(torch.diag(filters))).abs().max() < 1e-9:
        return (
            "your filters are a diagonal matrix: each output scales one of the 12 numbers on its "
            "own, so the outputs stay as correlated as neighbouring pixels are. Whitening mixes "
            "them: its filters are the eigenvectors of the covariance (torch.linalg.eigh), each "
            "divided by the square root of its eigenvalue."
        )
    vectors = torch.linalg.eigh(_covariance(patches - patches.mean(0))).eigenvectors
    transposed = torch.cov((patches @ filters).T)
    variances = torch.diag(transposed)
    uncorrelated = (transposed - torch.diag(variances)).abs().max() / variances.abs().max() < 1e-4
    if uncorrelated or _parallel_rows(filters, vectors) or _parallel_rows(filters.T, vectors.T):
        return (
            "the outputs of your filters are still correlated with each other. The eigenvectors "
            "are the columns of what torch.linalg.eigh returns; a filter is one of them, so "
            "transpose."
        )
    return (
        "the outputs of your filters are still correlated with each other: the filters should be "
        "the eigenvectors of the covariance of the centred patches (torch.linalg.eigh), as rows."
    )


def _output_covariance(filters: Any, patches: torch.Tensor) -> torch.Tensor:
    if not isinstance(filters, torch.Tensor):
        raise NotYet(f"return the filters as a tensor; you returned {short(filters)}.")
    if filters.is_complex():
        raise NotYet(
            "your filters are complex numbers (torch.linalg.eig gives those): a covariance is "
            "symmetric, and torch.linalg.eigh gives its real eigenvalues and eigenvectors."
        )
    if filters.dim() == 2 and filters.shape[0] == len(patches):
        raise NotYet(
            f"your filters have shape {shape_text(filters.shape)}, one row per patch: the "
            "covariance of the 12 numbers is centred.T @ centred, [12, 12]; centred @ centred.T "
            "compares the patches with each other instead."
        )
    if filters.shape != (12, 12):
        raise NotYet(
            f"your filters have shape {shape_text(filters.shape)}; expected [12, 12]: one row of "
            "12 weights per filter, 12 filters."
        )
    outputs = patches @ filters.double().T
    return torch.cov(outputs.T)


def _check_whitening(whitening_filters: Any) -> str:
    # every sixth patch, 1,442 of them: enough for the statistics, and small enough that a
    # covariance taken the wrong way round, one row and column per patch, is quick to compute
    patches = photo_patches()[::6]
    eigenvalues = torch.linalg.eigvalsh(_covariance(patches - patches.mean(0)))
    identity = torch.eye(12, dtype=torch.float64)
    got = run_learner("whitening_filters", whitening_filters, patches.clone(), 1e-9)
    c = _output_covariance(got, patches)
    variances = torch.diag(c)
    if (c - identity).abs().max() > 1e-3:
        mean_out = got.double() @ patches.mean(0)
        if (c + torch.outer(mean_out, mean_out) - identity).abs().max() < 1e-2:
            raise NotYet(
                "your filters whiten the patches as they are, not their variation around the "
                "mean patch: subtract patches.mean(0) before computing the covariance."
            )
        off = (c - torch.diag(variances)).abs().max() / variances.abs().max()
        if off > 1e-4:
            raise NotYet(_why_correlated(got.double(), patches))
        if torch.allclose(variances.sort().values, eigenvalues, rtol=1e-3):
            raise NotYet(
                "your outputs are uncorrelated, but their variances are the eigenvalues: divide "
                "each eigenvector by the square root of its eigenvalue (plus eps)."
            )
        if torch.allclose(variances.sort().values, 1 / eigenvalues.flip(0), rtol=1e-2):
            raise NotYet(
                "your outputs are uncorrelated, but their variances are 1 / eigenvalue: divide by "
                "the square root of the eigenvalue, not by the eigenvalue itself."
            )
        own = patches - patches.mean(1, keepdim=True)  # each patch minus its own mean
        values, vectors = torch.linalg.eigh(_covariance(own))
        from_own = vectors.T / torch.sqrt(values.clamp_min(0) + 1e-9)[:, None]
        if _parallel_rows(got.double(), from_own):
            raise NotYet(
                "your filters whiten each patch minus its own mean; subtract the mean patch, "
                "patches.mean(0), the average over all the patches, instead."
            )
        raise NotYet(
            f"your outputs are uncorrelated, but their variances range from "
            f"{variances.min():.3g} to {variances.max():.3g}; each should be 1."
        )
    eps = 0.01
    got = run_learner("whitening_filters", whitening_filters, patches.clone(), eps)
    # the covariance's eigenvalues: the same for filters in any order or rotated back (ZCA)
    variances = torch.linalg.eigvalsh(_output_covariance(got, patches))
    expected = (eigenvalues / (eigenvalues + eps)).sort().values
    if torch.allclose(variances, torch.ones(12, dtype=torch.float64), atol=1e-3):
        raise NotYet(
            "with eps=0.01 your outputs still have variance exactly 1: add eps to each eigenvalue "
            "before the square root, so that nearly empty directions are not blown up."
        )
    if not torch.allclose(variances, expected, rtol=1e-3, atol=1e-6):
        raise NotYet(
            "with eps=0.01 the variances of your outputs should be lambda / (lambda + eps), one "
            "for each eigenvalue lambda: divide each eigenvector by sqrt(lambda + eps)."
        )
    return (
        "on real photo patches your filters' outputs are uncorrelated with variance 1, and "
        "lambda / (lambda + eps) once eps matters."
    )


def _check_alternating(flips_for_epoch: Any) -> str:
    base = torch.rand(500, generator=torch.Generator().manual_seed(0)) < 0.5
    original = base.clone()
    seen = []
    for epoch in range(6):  # one tensor for every epoch, as a training loop passes it
        got = run_learner("flips_for_epoch", flips_for_epoch, base, epoch)
        if not torch.equal(base, original):
            raise NotYet(
                f"in epoch {epoch} your function changed base itself: the next epoch would start "
                "from the wrong choice. Return a new tensor (~base), do not flip in place."
            )
        if not isinstance(got, torch.Tensor) or got.shape != base.shape:
            raise NotYet(
                f"return one True/False per image, a tensor of shape [500]; for epoch {epoch} you "
                f"returned {short(got)}."
            )
        if got.dtype != torch.bool:
            raise NotYet(
                f"your result holds {got.dtype}; torch.where needs True/False (torch.bool). "
                "~base flips a bool tensor; base ^ 1 or base + 1 changes its type."
            )
        seen.append(got.clone())
    if not torch.equal(seen[0], base):
        raise NotYet("in epoch 0 mirror exactly the images of the first, random choice: base.")
    for epoch in range(1, 6):
        if torch.equal(seen[epoch], seen[epoch - 1]):
            raise NotYet(
                f"epochs {epoch - 1} and {epoch} mirror the same images: each image should "
                "change side every epoch."
            )
        if not torch.equal(seen[epoch], ~seen[epoch - 1]):
            changed = int((seen[epoch] != seen[epoch - 1]).sum())
            raise NotYet(
                f"from epoch {epoch - 1} to {epoch} only {changed} of 500 images changed side; "
                "every one should."
            )
    return "each image is mirrored in every other epoch, starting from the random first choice."


def _check_ema(ema_update: Any) -> str:
    for decay in (0.9, 0.75):  # two decays: one fixed in the code is seen
        _check_ema_once(ema_update, decay)
    return (
        "every weight and BatchNorm statistic moved 1 - decay of the way towards the model, for "
        "decay 0.9 and 0.75, the counter copied."
    )


def _check_ema_once(ema_update: Any, decay: float) -> None:
    torch.manual_seed(0)
    model, average = SpeedNetSmall(), SpeedNetSmall()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
        for module in model.modules():  # BatchNorm's running statistics move too
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.add_(torch.randn_like(module.running_mean))
                module.running_var.mul_(2)
                module.num_batches_tracked.fill_(7)
    current = {k: v.clone() for k, v in model.state_dict().items()}
    before = {k: v.clone() for k, v in average.state_dict().items()}
    try:
        run_learner("ema_update", ema_update, average.state_dict(), model.state_dict(), decay)
    except NotYet as exc:
        if "can't be cast" in str(exc.__cause__ or ""):
            raise NotYet(
                "ema_update tried to average num_batches_tracked, a counter of integers: an "
                "integer tensor cannot hold decay * average + (1 - decay) * current. Copy the "
                "tensors that are not floating point (tensor.is_floating_point() is False)."
            ) from None
        raise
    after = average.state_dict()
    if all(torch.equal(after[k], before[k]) for k in before):
        raise NotYet(
            "the average model did not change: update its tensors in place (mul_ and add_, "
            "lerp_, or copy_), since state_dict() hands you the model's own tensors."
        )
    if any(not torch.equal(v, current[k]) for k, v in model.state_dict().items()):
        raise NotYet("your function changed the trained model: only the average should move.")
    name = "layers.1.0.weight"
    swapped = (1 - decay) * before[name] + decay * current[name]
    if torch.allclose(after[name], swapped, atol=1e-6):
        raise NotYet(
            f"with decay {decay} your average moved {decay:.0%} of the way to the current "
            "weights: decay is the share the average keeps, average = decay * average + "
            "(1 - decay) * current."
        )
    for key, value in after.items():
        if value.is_floating_point():
            expected = decay * before[key] + (1 - decay) * current[key]
            if not torch.allclose(value, expected, atol=1e-6):
                raise NotYet(
                    f"with decay {decay}, {key} is not {decay} * average + {1 - decay:.2g} * "
                    "current after your update: use the decay you are given."
                )
        elif not torch.equal(value, current[key]):
            raise NotYet(
                f"{key} is a counter (integers), not a weight: copy it from the current model "
                "instead of averaging."
            )


q1 = Exercise(
    "q1: whitening filters",
    _check_whitening,
    hint="""
        Four steps: subtract the mean patch; covariance = centred.T @ centred / (len - 1);
        eigenvalues, eigenvectors = torch.linalg.eigh(covariance); each filter is one column of
        eigenvectors divided by the square root of its eigenvalue plus eps. Return them as rows.
    """,
    solution="""
        def whitening_filters(patches, eps):
            centred = patches - patches.mean(0)
            covariance = centred.T @ centred / (len(patches) - 1)
            eigenvalues, eigenvectors = torch.linalg.eigh(covariance)
            return eigenvectors.T / torch.sqrt(eigenvalues + eps)[:, None]
    """,
)

q2 = Exercise(
    "q2: alternating flips",
    _check_alternating,
    hint="""
        Epoch 0 uses base as it is; epoch 1 the opposite; epoch 2 base again. What does
        epoch % 2 tell you, and what does ~ do to a tensor of True/False?
    """,
    solution="""
        def flips_for_epoch(base, epoch):
            return base if epoch % 2 == 0 else ~base
    """,
)

q3 = Exercise(
    "q3: the moving average of the weights",
    _check_ema,
    hint="""
        Loop over average.items(). For a floating-point tensor (tensor.is_floating_point()),
        move it in place: tensor.mul_(decay).add_(current[name], alpha=1 - decay). Anything else
        (BatchNorm's batch counter) is copied with copy_.
    """,
    solution="""
        @torch.no_grad()
        def ema_update(average, current, decay):
            for name, tensor in average.items():
                if tensor.is_floating_point():
                    tensor.mul_(decay).add_(current[name], alpha=1 - decay)
                else:
                    tensor.copy_(current[name])
    """,
)
