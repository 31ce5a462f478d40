"""Saving and loading models: method 1 (whole model), method 2 (state_dict), training checkpoints.

Every save is atomic: the file is written next to its target and renamed over it only once it is
complete, so a crash mid-save leaves the previous file intact. Every load uses
``weights_only=True`` unless the caller opts in with ``trust_pickle=True``.
"""

from __future__ import annotations

import io
import os
import pickle
import re
import sys
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import CourseError
from .lecture import (
    ACCEPTED_LAYOUTS,
    LectureModule,
    foreign_globals,
    load_lecture_model,
    match_lesson_layout,
    to_lesson_net,
)
from .models import ARCHITECTURES, LessonNetSequential, arch_name, build_model, copy_weights

CHECKPOINT_FORMAT = "cifar-course-checkpoint"
PICKLE_WARNING = (
    "Loading it means unpickling, which can run any code stored in the file. Only do that for a "
    "file you made yourself or fully trust: pass trust_pickle=True (CLI: --trust-pickle). "
    "Better: save a state_dict (method 2) and load that."
)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` to a temporary file beside ``path``, fsync it, then rename it over.

    Only this save's own temporary file is ever removed: another process may be writing its own
    beside it. (A save killed half-way leaves its ``.NAME.*.tmp``; a training run removes those
    in its ``--out`` once it owns the folder, ``engine.own_out``.)

    The file gets the permissions a plain ``torch.save`` would give it under the process's umask
    (usually 0644), not the 0600 of a temporary file, so others on a shared machine can read it.
    """
    path = Path(path)
    # Serialized in memory first: torch.save writing to a full disk reports "unexpected pos"
    # instead of the operating system's error, which the file's own write gives below.
    buffer = io.BytesIO()
    torch.save(obj, buffer)
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
            f.write(buffer.getbuffer())
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)  # this save's own temporary file, never another's
        raise OSError(exc.errno, exc.strerror, str(path)) from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
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
    extra: dict[str, Any] | None = None,
) -> Path:
    """Save a training checkpoint: weights, optimizer state, epochs done, history and settings,
    and a recipe's ``extra`` entries (the speed-run's lookahead weights).

    It holds only tensors and plain Python values, so it loads with ``weights_only=True``.
    """
    state: dict[str, Any] = {
        "format": CHECKPOINT_FORMAT,
        "arch": arch_name(model),
        "model": model.state_dict(),
        "optimizer": None if optimizer is None else optimizer.state_dict(),
        "epoch": epoch,
        "history": history or [],
        "config": config or {},
    }
    extra = extra or {}
    clash = state.keys() & extra.keys()
    if clash:
        raise ValueError(f"extra entries {sorted(clash)} would replace the checkpoint's own")
    state.update(extra)
    return atomic_save(state, path)


def _check_file(path: Path) -> None:
    if not path.exists():
        raise CourseError(f"Checkpoint '{path}' does not exist. Check the path.")
    if path.is_dir():
        raise CourseError(
            f"'{path}' is a folder, not a checkpoint file. Give a .pt file inside it."
        )
    if not path.is_file():  # a FIFO, a device such as /dev/zero, a socket
        raise CourseError(
            f"'{path}' is not a regular file, so it is no checkpoint. Check the path."
        )
    if path.stat().st_size == 0:
        raise CourseError(
            f"Checkpoint '{path}' is empty (0 bytes); its save was interrupted. Use an earlier one."
        )
    with path.open("rb") as file:
        start = file.read(4)
    if start != b"PK\x03\x04" and start[:1] != b"\x80":
        raise CourseError(
            f"'{path}' is not a PyTorch checkpoint: torch.save writes a zip archive (before "
            "PyTorch 1.6, a pickle), and this file starts as neither. Check the path."
        )
    if start == b"PK\x03\x04":
        _check_zip(path)


def _check_zip(path: Path) -> None:
    """torch.load reads a file's bytes as they are, so check them against the checksums the zip
    archive stores. A file saved with PyTorch's ``compute_crc32`` setting off stores 0 for
    every part: there is nothing to check then."""
    try:
        with zipfile.ZipFile(path) as archive:
            if all(part.CRC == 0 for part in archive.infolist()):
                return
            damaged = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise _damaged(path, exc) from exc
    if damaged is not None:
        raise CourseError(
            f"'{path}' is damaged: its part '{damaged}' does not read back as it was saved. Use "
            "an earlier checkpoint, or copy the file again."
        )


def _damaged(path: Path, exc: BaseException) -> CourseError:
    detail = str(exc).splitlines()[0] if str(exc) else "no detail"
    return CourseError(
        f"'{path}' is truncated or not a PyTorch checkpoint ({type(exc).__name__}: {detail}). "
        "Use another checkpoint."
    )


def _load_trusted(path: Path, map_location: Any) -> Any:
    """A full unpickle, with the current folder importable (where a lecture's model.py sits)."""
    here = os.getcwd()
    sys.path.insert(0, here)
    try:
        return torch.load(path, map_location=map_location, weights_only=False)
    except ModuleNotFoundError as exc:
        raise CourseError(
            f"'{path}' is a whole-model pickle whose class lives in module '{exc.name}', which "
            f"cannot be imported here. Run from the folder that holds {exc.name}.py (or add that "
            f"folder to PYTHONPATH); or there, convert it once with `cifar-course export {path} "
            "OUT` or save its state_dict, and use that file instead."
        ) from exc
    except AttributeError as exc:
        found = re.search(r"Can't get attribute '([\w.]+)' on <module '([\w.]+)'", str(exc))
        name, module = found.groups() if found else ("?", "?")
        where = "the script that saved it" if "__main__" in module else f"module '{module}'"
        raise CourseError(
            f"'{path}' is a whole model of class '{name}', which {where} defined and this program "
            f"does not have. In a script that defines '{name}', load the file and save "
            "model.state_dict(); the course loads that file without --trust-pickle."
        ) from exc
    except pickle.UnpicklingError as exc:
        raise CourseError(f"'{path}' is not a PyTorch checkpoint ({exc}).") from exc
    except Exception as exc:  # a damaged file can make the unpickler raise almost anything
        raise _damaged(path, exc) from exc
    finally:
        sys.path.remove(here)


class PickleRefused(CourseError):
    """A file of Python objects that ``load`` would not unpickle without ``trust_pickle``."""


def load(path: str | Path, map_location: Any = "cpu", trust_pickle: bool = False) -> Any:
    """``torch.load`` with ``weights_only=True``, the lecture's whole models, and clear errors.

    A file of tensors and plain values loads as it is. A whole model of the lecture's ``Tudui``
    loads safely through ``cifar_course.lecture``. Any other pickled object needs
    ``trust_pickle=True``, which unpickles it in full and so can run code stored in the file.
    """
    path = Path(path)
    _check_file(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights_only" not in str(exc).lower().replace(" ", "_"):
            raise CourseError(f"'{path}' is not a PyTorch checkpoint ({exc}).") from exc
        refused = exc
    except Exception as exc:  # a damaged file can make the unpickler raise almost anything
        raise _damaged(path, exc) from exc
    try:
        lecture = load_lecture_model(path, map_location)
    except pickle.UnpicklingError as exc:
        foreign = ", ".join(foreign_globals(path))
        raise CourseError(
            f"'{path}' names the lecture's class Tudui but also {foreign}, which no file of the "
            "lecture contains. It was not loaded, and nothing in it ran."
        ) from exc
    if lecture is not None:
        return lecture
    if trust_pickle:
        return _load_trusted(path, map_location)
    raise PickleRefused(
        f"'{path}' contains Python objects, not only tensors (for example a whole model "
        f"saved with torch.save(model)). {PICKLE_WARNING}"
    ) from refused


Log = Callable[[str], None]


def fits(value: Any, like: torch.Tensor) -> bool:
    """Whether ``value`` could stand for ``like`` when resuming: a plain (strided, not meta)
    tensor of its dtype and shape, holding finite numbers."""
    return (
        isinstance(value, torch.Tensor)
        and value.layout == torch.strided
        and not value.is_meta
        and value.dtype == like.dtype
        and value.shape == like.shape
        and bool(torch.isfinite(value).all())
    )


def check_values(state: dict[str, Any], path: Path) -> None:
    """Refuse weights that are not finite floating-point numbers (NaN or inf from a run that
    diverged; integers, True/False or complex numbers from a crafted file) or not plain tensors
    (sparse, or meta tensors, which hold no values). BatchNorm's batch counter, an integer, is
    the one exception to the first rule."""
    for key, value in state.items():
        if not isinstance(key, str):
            raise CourseError(
                f"'{path}' names a tensor {key!r}, not by a layer name. Check the file."
            )
        if not isinstance(value, torch.Tensor):
            continue
        if value.is_nested or value.layout != torch.strided or value.is_meta:
            kind = "a tensor without data (meta)" if value.is_meta else f"a {value.layout} tensor"
            raise CourseError(
                f"'{path}' holds {key} as {kind}, not a plain tensor of weights: it is no trained "
                "network the course saves or loads. Check the file."
            )
        stored = value.untyped_storage().nbytes() // max(value.element_size(), 1)
        if value.numel() > stored:  # a tensor expanded (stride 0) to claim what the file lacks
            raise CourseError(
                f"'{path}' holds {key} with {value.numel():,} values over a storage of "
                f"{stored:,}: a crafted file, not trained weights. Check the file."
            )
        if key.endswith("num_batches_tracked"):
            continue
        if value.dtype not in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
            raise CourseError(
                f"'{path}' holds {key} as {value.dtype}, not floating-point weights: it is no "
                "trained network. Check the file."
            )
        if not bool(torch.isfinite(value).all()):
            raise CourseError(
                f"'{path}' holds NaN or infinite values in {key}: the run that saved it diverged. "
                "Use an earlier checkpoint."
            )


def _state_dict_to_model(
    state: dict[str, Any], path: Path, arch: str | None = None, log: Log = print
) -> nn.Module:
    check_values(state, path)
    layout = None if arch else match_lesson_layout(state)
    if layout is not None and layout != ACCEPTED_LAYOUTS[0]:  # one of the lecture's layouts
        log(f"'{path}': recognised {layout}, loaded as the lesson net")
    keys = set(state)
    candidates = [arch] if arch else list(ARCHITECTURES)
    wrong_shapes: CourseError | None = None
    for name in candidates:
        if name not in ARCHITECTURES:
            raise CourseError(f"'{path}' was saved from unknown architecture '{name}'.")
        model = build_model(name)
        expected = set(model.state_dict())
        if keys == expected:
            try:
                model.load_state_dict(state)
            except RuntimeError as exc:  # SpeedNet and SpeedNetSmall share their names: go on
                lines = [line.strip() for line in str(exc).splitlines()[1:] if line.strip()]
                detail = "; ".join(lines[:3]) or str(exc)
                wrong_shapes = wrong_shapes or CourseError(
                    f"'{path}' has the layer names of {name} but wrong shapes: {detail}"
                )
                continue
            return model
    if wrong_shapes is not None:
        raise wrong_shapes
    if layout is not None:  # the lesson net under names no course class uses
        return to_lesson_net(state)
    expected = set(build_model(candidates[0]).state_dict())
    missing = sorted(expected - keys)[:4]
    unexpected = sorted(keys - expected)[:4]
    accepted = (
        "" if arch else " Layouts accepted for the lesson net: " + "; ".join(ACCEPTED_LAYOUTS)
    )
    raise CourseError(
        f"'{path}' does not fit the {candidates[0]} architecture: missing keys {missing}, "
        f"unexpected keys {unexpected}. Was it saved from a different model?{accepted}."
    )


def check_classifier(model: nn.Module, path: Path) -> nn.Module:
    """Refuse a whole model that does not map one 32x32 colour image to 10 class scores."""
    name = type(model).__name__
    parameter = next(model.parameters(), None)
    probe = torch.zeros(1, 3, 32, 32, device=parameter.device if parameter is not None else "cpu")
    try:
        with torch.no_grad():
            output = model.eval()(probe)
    except Exception as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CourseError(
            f"'{path}' holds a {name} that fails on one 32x32 colour image ({first}): it is not a "
            "CIFAR-10 network the course can use."
        ) from exc
    shape = list(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
    if shape != [1, 10]:
        raise CourseError(
            f"'{path}' holds a {name} whose output for one [1, 3, 32, 32] image is {shape}, not "
            "[1, 10]: it is not a CIFAR-10 classifier."
        )
    return model


# The settings of each kind of layer the lecture's network has, compared before it runs once.
_LAYER_SETTINGS: dict[type[nn.Module], tuple[str, ...]] = {
    nn.Conv2d: (
        "in_channels",
        "out_channels",
        "kernel_size",
        "stride",
        "padding",
        "dilation",
        "groups",
        "padding_mode",
    ),
    nn.MaxPool2d: ("kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices"),
    nn.Flatten: ("start_dim", "end_dim"),
    nn.Linear: ("in_features", "out_features"),
}


def _layers(module: nn.Module) -> list[str]:
    """Each layer of ``module`` in order, as its class and settings, for instance
    ``Conv2d(in_channels=3, ..., padding=(2, 2), ...)``."""
    described = []
    for layer in module.modules():
        if next(layer.children(), None) is None:  # a layer, not a container
            kind = type(layer)
            settings = ", ".join(
                f"{name}={getattr(layer, name, None)!r}" for name in _LAYER_SETTINGS.get(kind, ())
            )
            described.append(f"{kind.__name__}({settings})")
    return described


def check_lecture_layers(lecture: nn.Module, path: Path) -> None:
    """Refuse a lecture ``Tudui`` whose layers or their settings (kernel, stride, padding,
    dilation, sizes) are not the lecture's network's, before it runs even once: a crafted
    padding of 100000 would ask for terabytes, and missing pooling layers would fail inside."""
    for module in lecture.modules():
        hooks = [
            name
            for name in (
                "_forward_hooks",
                "_forward_pre_hooks",
                "_backward_hooks",
                "_state_dict_hooks",
                "_load_state_dict_pre_hooks",
            )
            if getattr(module, name, None)
        ]
        if hooks or "forward" in vars(module):
            attached = ", ".join(hooks) or "a forward of its own"
            raise CourseError(
                f"'{path}' holds a Tudui with code attached to its layers ({attached}), which "
                "the lecture's network has not, so the course does not run it."
            )
    got, wanted = _layers(lecture), _layers(LessonNetSequential())
    if got == wanted:
        return
    if len(got) != len(wanted):
        detail = f"{len(got)} layers, where the lecture's network has {len(wanted)}"
    else:
        i = next(i for i, (a, b) in enumerate(zip(got, wanted, strict=True)) if a != b)
        detail = f"layer {i + 1} is {got[i]}, where the lecture's network has {wanted[i]}"
    raise CourseError(
        f"'{path}' holds a Tudui that is not the lecture's network ({detail}), so the course "
        "does not run it; give a file of the lecture's CIFAR-10 Tudui (train.py's tudui_N.pth)."
    )


def _from_lecture(lecture: LectureModule, path: Path, log: Log) -> nn.Module:
    """The course's lesson net with the weights of the lecture's whole ``Tudui`` model."""
    check_lecture_layers(lecture, path)
    lecture = lecture.float()  # a Tudui saved after .double() or .half() runs as the course does
    state = lecture.state_dict()
    if match_lesson_layout(state) is None:
        raise CourseError(
            f"'{path}' is the lecture's whole Tudui model, but its layers are not the lesson "
            "net's (3 convolutions, 2 linear layers), so the course cannot use it; give a file "
            "of the lecture's CIFAR-10 Tudui (train.py's tudui_N.pth)."
        )
    model = to_lesson_net(state).to(next(lecture.parameters()).device)
    probe = torch.rand(2, 3, 32, 32, device=next(lecture.parameters()).device)
    try:
        with torch.no_grad():
            same = torch.allclose(lecture.eval()(probe), model.eval()(probe), atol=1e-5)
    except RuntimeError as exc:
        raise CourseError(
            f"'{path}' holds a Tudui that fails on one batch of images "
            f"({str(exc).splitlines()[0]}), so the course cannot use it."
        ) from exc
    if not same:
        raise CourseError(
            f"'{path}' holds a Tudui whose layers are not in the lesson net's order, so the "
            "course cannot tell how to run them."
        )
    log(f"'{path}': the lecture's whole Tudui model, loaded safely as the lesson net")
    return model


def load_model(
    path: str | Path, map_location: Any = "cpu", trust_pickle: bool = False, log: Log = print
) -> nn.Module:
    """Load any model file the course accepts, in eval mode, and say what it recognised.

    Accepted: a course training checkpoint; a state_dict of a course network, or of the lesson
    net in one of the lecture's layouts; the lecture's whole ``Tudui`` model (loaded safely); any
    other whole model only with ``trust_pickle=True``. A whole model must map one 32x32 colour
    image to 10 scores.
    """
    path = Path(path)
    obj = load(path, map_location, trust_pickle)
    try:
        model = _to_model(obj, path, log)
    except CourseError:
        raise
    except (
        KeyError,
        TypeError,
        AttributeError,
        ValueError,
        RuntimeError,
        NotImplementedError,
    ) as exc:
        # a crafted file that gets past the checks above: still one line, never a traceback
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CourseError(
            f"'{path}' cannot be used as a model ({type(exc).__name__}: {detail}): it is damaged "
            "or was made by hand. Use another file."
        ) from exc
    return model.to(map_location if isinstance(map_location, (str, torch.device)) else "cpu").eval()


def _to_model(obj: Any, path: Path, log: Log) -> nn.Module:
    """The network in ``obj``, loaded from ``path`` (see ``load_model``)."""
    if isinstance(obj, LectureModule):
        check_values(obj.state_dict(), path)
        model = _from_lecture(obj, path, log)
    elif isinstance(obj, nn.Module):
        check_values(obj.state_dict(), path)  # before the probe runs it
        model = check_classifier(obj, path)
    elif isinstance(obj, dict) and obj.get("format") == CHECKPOINT_FORMAT:
        weights, arch = obj.get("model"), obj.get("arch")
        if not isinstance(weights, dict) or not (arch is None or isinstance(arch, str)):
            raise CourseError(
                f"'{path}' is a course checkpoint without weights or a network's name: it is "
                "damaged or was edited. Use another checkpoint."
            )
        model = _state_dict_to_model(weights, path, arch, log)
    elif isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        model = _state_dict_to_model(obj, path, log=log)
    else:
        raise CourseError(
            f"'{path}' holds a {type(obj).__name__}, not a model, state_dict or course checkpoint."
        )
    return model


def export_state_dict(
    source: str | Path,
    out: str | Path,
    layout: str = "course",
    trust_pickle: bool = False,
    force: bool = False,
    log: Log = print,
) -> Path:
    """Write the weights of any file ``load_model`` accepts as a plain state_dict.

    ``layout="course"`` keeps the course's key names: a safe file every command loads without
    flags. ``layout="lecture"`` names them ``model.0.weight`` ... ``model.8.bias``, as the lecture's
    ``Tudui`` (with ``self.model = nn.Sequential(...)``) expects in ``load_state_dict``.
    """
    source, out = Path(source), Path(out)
    if layout not in ("course", "lecture"):
        raise CourseError(f"--layout must be 'course' or 'lecture', not '{layout}'.")
    if out.is_symlink() and not out.exists():  # --force replaces regular files only
        raise CourseError(
            f"OUT '{out}' is a link that leads nowhere (or to itself); choose another name."
        )
    if out.exists() and out.resolve() == source.resolve():
        raise CourseError(f"'{out}' is the file being exported; choose another name for OUT.")
    if out.is_dir():
        raise CourseError(
            f"OUT '{out}' is a folder; give a file name, such as '{out / (source.stem + '.pt')}'."
        )
    if out.exists() and not out.is_file():
        raise CourseError(f"OUT '{out}' exists and is not a regular file; choose another name.")
    if out.exists() and not force:
        raise CourseError(f"'{out}' already exists; choose another name, or pass --force.")
    model = load_model(source, trust_pickle=trust_pickle, log=log)
    if layout == "lecture":
        if arch_name(model) not in ("lesson_net", "lesson_net_sequential"):
            raise CourseError(
                f"--layout lecture needs the lesson net, and '{source}' holds {arch_name(model)}. "
                "Use --layout course."
            )
        model = copy_weights(model, LessonNetSequential())
    atomic_save(model.state_dict(), out)
    keys = list(model.state_dict())
    log(f"wrote {out}: a state_dict in the {layout}'s layout ({keys[0]} ... {keys[-1]})")
    return out


def load_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """Load a training checkpoint written by ``save_checkpoint``, safely: it holds only tensors
    and plain values, so a file of Python objects is never one, and is never unpickled here,
    whatever ``--trust-pickle`` says."""
    try:
        obj = load(path, map_location)
    except PickleRefused:
        raise CourseError(
            f"'{path}' contains Python objects, so it is not a training checkpoint written by "
            "cifar-course (those hold only tensors and plain values), and --resume cannot use "
            "it; --trust-pickle does not change that. To start a new run from its weights, use "
            "--init-from (with --trust-pickle if you trust the file)."
        ) from None
    if not (isinstance(obj, dict) and obj.get("format") == CHECKPOINT_FORMAT):
        raise CourseError(
            f"'{path}' is not a training checkpoint written by cifar-course (it has no optimizer "
            "state or epoch count), so training cannot resume from it; to start a new run from "
            "its weights, use --init-from instead of --resume."
        )
    return obj


def trained_in_bf16(path: str | Path) -> bool:
    """Whether ``path`` is a training checkpoint of a run that trained (and so tested) in bf16
    autocast, as the speed-run's checkpoints record; False for any other file."""
    try:
        saved = load(Path(path), "cpu", False)
    except CourseError:
        return False
    return isinstance(saved, dict) and saved.get("bf16") is True
