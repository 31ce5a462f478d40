"""Saving and loading models: method 1 (whole model), method 2 (state_dict), training checkpoints.

Every save is atomic: the file is written next to its target and renamed over it only once it is
complete, so a crash mid-save leaves the previous file intact. Every load uses
``weights_only=True`` unless the caller opts in with ``trust_pickle=True``.
"""

from __future__ import annotations

import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import CourseError
from .models import ARCHITECTURES, arch_name, build_model

CHECKPOINT_FORMAT = "cifar-course-checkpoint"
PICKLE_WARNING = (
    "Loading it means unpickling, which can run any code stored in the file. Only do that for a "
    "file you made yourself or fully trust: pass trust_pickle=True (CLI: --trust-pickle). "
    "Better: save a state_dict (method 2) and load that."
)


def atomic_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` to a temporary file beside ``path``, fsync it, then rename it over."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise CourseError(
            f"Cannot write to '{path.parent}' ({exc.strerror}). Choose a folder you can write to."
        ) from exc
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    for stale in path.parent.glob(f".{path.name}.*.tmp"):  # left by a save that was killed
        stale.unlink(missing_ok=True)
    return path


def save_whole_model(model: nn.Module, path: str | Path) -> Path:
    """Method 1: pickle the whole model object (its class must stay importable to load it)."""
    return atomic_save(model, path)


def save_state_dict(model: nn.Module, path: str | Path) -> Path:
    """Method 2: save only the parameters and buffers, the recommended way."""
    return atomic_save(model.state_dict(), path)


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    epoch: int = 0,
    history: list[dict[str, float]] | None = None,
    config: dict[str, Any] | None = None,
) -> Path:
    """Save a training checkpoint: weights, optimizer state, epochs done, history and settings.

    It holds only tensors and plain Python values, so it loads with ``weights_only=True``.
    """
    state = {
        "format": CHECKPOINT_FORMAT,
        "arch": arch_name(model),
        "model": model.state_dict(),
        "optimizer": None if optimizer is None else optimizer.state_dict(),
        "epoch": epoch,
        "history": history or [],
        "config": config or {},
    }
    return atomic_save(state, path)


def load(path: str | Path, map_location: Any = "cpu", trust_pickle: bool = False) -> Any:
    """``torch.load`` with ``weights_only=True`` unless ``trust_pickle``, and clear errors."""
    path = Path(path)
    if not path.exists():
        raise CourseError(f"Checkpoint '{path}' does not exist. Check the path.")
    if path.is_dir():
        raise CourseError(
            f"'{path}' is a folder, not a checkpoint file. Give a .pt file inside it."
        )
    if path.stat().st_size == 0:
        raise CourseError(
            f"Checkpoint '{path}' is empty (0 bytes); its save was interrupted. Use an earlier one."
        )
    try:
        return torch.load(path, map_location=map_location, weights_only=not trust_pickle)
    except pickle.UnpicklingError as exc:
        if not trust_pickle and "weights_only" in str(exc).lower().replace(" ", "_"):
            raise CourseError(
                f"'{path}' contains Python objects, not only tensors (for example a whole model "
                f"saved with torch.save(model)). {PICKLE_WARNING}"
            ) from exc
        raise CourseError(f"'{path}' is not a PyTorch checkpoint ({exc}).") from exc
    except AttributeError as exc:
        raise CourseError(
            f"'{path}' is a whole-model pickle whose class cannot be found ({exc}). Import or "
            "define that class before loading, or better, save and load a state_dict."
        ) from exc
    except Exception as exc:  # a damaged file can make the unpickler raise almost anything
        raise CourseError(
            f"'{path}' is truncated or not a PyTorch checkpoint ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else 'no detail'}). Use another checkpoint."
        ) from exc


def _state_dict_to_model(state: dict[str, Any], path: Path, arch: str | None = None) -> nn.Module:
    keys = set(state)
    candidates = [arch] if arch else list(ARCHITECTURES)
    for name in candidates:
        if name not in ARCHITECTURES:
            raise CourseError(f"'{path}' was saved from unknown architecture '{name}'.")
        model = build_model(name)
        expected = set(model.state_dict())
        if keys == expected:
            try:
                model.load_state_dict(state)
            except RuntimeError as exc:
                lines = [line.strip() for line in str(exc).splitlines()[1:] if line.strip()]
                detail = "; ".join(lines) or str(exc)
                raise CourseError(
                    f"'{path}' has the layer names of {name} but wrong shapes: {detail}"
                ) from exc
            return model
    expected = set(build_model(candidates[0]).state_dict())
    missing = sorted(expected - keys)[:4]
    unexpected = sorted(keys - expected)[:4]
    raise CourseError(
        f"'{path}' does not fit the {candidates[0]} architecture: missing keys {missing}, "
        f"unexpected keys {unexpected}. Was it saved from a different model?"
    )


def load_model(
    path: str | Path, map_location: Any = "cpu", trust_pickle: bool = False
) -> nn.Module:
    """Load any model file the course writes: a training checkpoint, a state_dict, or a whole model.

    A whole model (method 1) needs ``trust_pickle=True``. The model comes back in eval mode.
    """
    path = Path(path)
    obj = load(path, map_location, trust_pickle)
    if isinstance(obj, nn.Module):
        model = obj
    elif isinstance(obj, dict) and obj.get("format") == CHECKPOINT_FORMAT:
        model = _state_dict_to_model(obj["model"], path, obj.get("arch"))
    elif isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        model = _state_dict_to_model(obj, path)
    else:
        raise CourseError(
            f"'{path}' holds a {type(obj).__name__}, not a model, state_dict or course checkpoint."
        )
    return model.to(map_location if isinstance(map_location, (str, torch.device)) else "cpu").eval()


def load_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """Load a training checkpoint written by ``save_checkpoint``, safely."""
    obj = load(path, map_location)
    if not (isinstance(obj, dict) and obj.get("format") == CHECKPOINT_FORMAT):
        raise CourseError(
            f"'{path}' is not a training checkpoint written by cifar-course (it has no optimizer "
            "state or epoch count), so training cannot resume from it."
        )
    return obj
