"""The harness every recipe runs in, written once: ``fit(recipe, run, hyper)``.

A *recipe* (``cifar_course.recipes``) says how to build a network and its optimizer and how to
train one epoch; its hyper-parameters are one dataclass. The harness does the rest, the same
for every recipe, in this order:

1. validate the run's settings (``RunConfig``) and the recipe's (its hyper-parameters);
2. join torchrun's process group, if torchrun started this process (``cifar_course.distributed``);
3. seed Python, NumPy and PyTorch;
4. build the recipe: its network, optimizer and data;
5. after a torchrun restart, find this job's last checkpoint; ``--resume`` from a checkpoint or
   ``--init-from`` a file's weights; refuse to write over an earlier run's files, and own
   ``--out`` until the run ends;
6. open the TensorBoard writer (rank 0);
7. each epoch: train, average the loss over the processes, stop if it is no longer a number,
   and on rank 0 evaluate, save a checkpoint, log and print one line.
"""

from __future__ import annotations

import math
import os
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import Field, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch
from torch import nn
from torch.utils.tensorboard import SummaryWriter

from . import distributed
from .checkpoints import check_values, fits, load_checkpoint, load_model, save_checkpoint
from .device import pick_device, synchronize
from .distributed import Distributed
from .errors import CourseError
from .limits import MAX_BATCH, MAX_EPOCHS, MAX_LR
from .models import arch_name, copy_weights

Log = Callable[[str], None]
History = list[dict[str, float]]


def setting(default: Any, help: str | None = None, **cli: Any) -> Any:
    """A dataclass field that ``cifar-course train`` offers as a flag: ``help`` is its text
    (None: a setting for Python only, without a flag); ``cli`` may give ``choices`` and
    ``metavar`` for argparse, and ``note``, words added to ``--help``'s defaults."""
    return field(default=default, metadata={"help": help, **cli})


@dataclass(frozen=True)
class RunConfig:
    """What every run has, whatever its recipe: where it writes, what it starts from, its seed
    and its device. Not changed while the run goes on."""

    out: str = setting("checkpoints", "folder for the per-epoch checkpoints", metavar="DIR")
    logdir: str | None = setting(
        None, "TensorBoard log folder (default: runs/ and the recipe's network)", metavar="DIR"
    )
    resume: str | None = setting(
        None, "continue from a checkpoint written by an earlier run", metavar="CHECKPOINT"
    )
    init_from: str | None = setting(
        None,
        "start a new run (epoch 1, new optimizer) from the weights in FILE: any checkpoint, "
        "state_dict or lecture file that evaluate accepts",
        metavar="FILE",
    )
    trust_pickle: bool = setting(
        False, "allow a whole-model pickle; it can run code, so only for files you trust"
    )
    overwrite: bool = setting(
        False,
        "replace an earlier run's checkpoints in --out and its TensorBoard events in --logdir "
        "(without it, a run that would write over them refuses to start)",
    )
    seed: int = setting(0, "seed of the initial weights and of every shuffle")
    device: str = setting(
        "auto",
        "cuda, then mps, then cpu (auto); or one of them",
        choices=("auto", "cpu", "cuda", "mps"),
    )

    def validate(self) -> None:
        """Reject settings that cannot work, before anything is written."""
        check_types(self)
        if self.resume and self.init_from:
            raise CourseError(
                "--resume continues a run and --init-from starts a new one; give only one of them."
            )
        if not 0 <= self.seed < 2**32:
            raise CourseError(f"--seed must be from 0 to 4294967295, got {self.seed}.")
        for flag, folder in (("--out", self.out), ("--logdir", self.logdir)):
            if folder is not None and not folder.strip():
                raise CourseError(f"{flag} is empty; give a folder.")
            if folder is not None:
                _check_writable(Path(folder), flag)


class Hyper:
    """What every recipe's hyper-parameter dataclass has (each declares them with its own
    defaults): epochs, the global batch size, and the (peak) learning rate."""

    epochs: int
    batch_size: int
    lr: float

    def resolved(self: H, device_type: str) -> H:
        """These settings on a device of ``device_type``: a recipe whose defaults differ by
        device fills them in here. By default, the settings as they are."""
        return self

    def planned(
        self: H, run: RunConfig, device: torch.device, job: Distributed | None, log: Log
    ) -> H:
        """These settings once a recipe that measures the machine to choose them (the
        speed-run's ``--budget``) has done so; called on resolved and validated settings,
        before anything is built. By default, the settings as they are."""
        return self

    def validate(self) -> None:
        """Reject settings that cannot work, before anything is written."""
        check_types(self)
        if not 1 <= self.epochs <= MAX_EPOCHS:
            raise CourseError(f"--epochs must be from 1 to {MAX_EPOCHS:,}, got {self.epochs}.")
        if not 1 <= self.batch_size <= MAX_BATCH:
            raise CourseError(
                f"--batch-size must be from 1 to {MAX_BATCH:,} (CIFAR-10's training set), got "
                f"{self.batch_size}."
            )
        if not 0 < self.lr <= MAX_LR:
            raise CourseError(f"--lr must be a positive number up to {MAX_LR:g}, got {self.lr}.")


H = TypeVar("H", bound=Hyper)

_KINDS = {"int": (int,), "float": (int, float), "bool": (bool,), "str": (str,)}


def kind_of(item: Field[Any]) -> str:
    """The kind a settings field declares: "int", "float", "bool" or "str" (its first type,
    without "| None")."""
    return str(item.type).split(" |")[0]


def check_types(settings: Any) -> None:
    """Refuse a setting of the wrong kind (``epochs="2"``, ``lookahead="no"``, ``seed=1.5``),
    as each dataclass field declares it, in one line: from Python as from the command line."""
    for item in fields(settings):
        value = getattr(settings, item.name)
        if value is None and "None" in str(item.type):
            continue
        kind = kind_of(item)
        allowed = _KINDS.get(kind)
        if allowed is None:
            continue
        wrong = not isinstance(value, allowed) or (kind != "bool" and isinstance(value, bool))
        if wrong:  # a number out of range (inf, NaN) is for each recipe's validate to say
            flag = "--" + item.name.replace("_", "-")
            raise CourseError(
                f"{flag} must be {'a' if kind != 'int' else 'a whole'} "
                f"{'number' if kind in ('int', 'float') else kind}, got {value!r}."
            )


def _check_writable(folder: Path, flag: str) -> None:
    if folder.is_symlink() and not folder.exists():  # a loop, or a link to nothing
        raise CourseError(f"{flag} '{folder}' is a link that leads nowhere; give a folder.")
    existing = folder
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise CourseError(f"{flag} '{folder}': '{existing}' is a file, not a folder.")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise CourseError(f"{flag} '{folder}' cannot be written ('{existing}' is read-only).")


class Recipe:
    """One recipe, built for one process of one run: its network (``model``), optimizer and
    data, and how it trains and tests them. ``fit`` calls, in this order: ``build``;
    ``load`` (``--resume``); ``check`` (before anything is written); ``start``; then per epoch
    ``train_epoch`` and, on rank 0, ``evaluate``; at the end ``close``, however the run ends,
    and ``report``."""

    name: ClassVar[str]  # --recipe
    hyper_type: ClassVar[type[Hyper]]  # its hyper-parameters' dataclass
    logdir: ClassVar[str]  # the default TensorBoard folder

    arch: str  # the network's name in checkpoint file names (models.arch_name)
    model: nn.Module  # the network that trains, on ``device``
    optimizer: torch.optim.Optimizer
    steps_per_epoch: int  # this process's optimizer steps in one epoch
    setup_seconds: float = 0.0  # training time spent before the first epoch (counted in it)
    logs_steps: bool = False  # train_epoch logs "train_loss" itself, every few steps

    def __init__(
        self, hyper: Any, device: torch.device, job: Distributed | None, seed: int, log: Log
    ) -> None:
        self.hyper, self.device, self.job, self.seed, self.log = hyper, device, job, seed, log
        self.main = job is None or job.is_main
        self.build()

    def build(self) -> None:
        """Build ``model`` and ``optimizer`` and set ``arch``: the recipe's own start, from
        ``hyper`` and ``device``. ``steps_per_epoch`` is set here or in ``start``."""
        raise NotImplementedError

    @property
    def tested(self) -> nn.Module:
        """The network that is tested and saved: ``model`` (a recipe with a weight average
        tests and saves the average)."""
        return self.model

    def per_process(self, images: int) -> tuple[int, int]:
        """(this process's share of the batch, its steps in an epoch of ``images``)."""
        batch = distributed.per_process_batch(self.hyper.batch_size, self.job)
        share = images if self.job is None else -(-images // self.job.world_size)
        return batch, -(-share // batch)

    def shuffle(self, epoch: int, images: int) -> tuple[torch.Generator, torch.Tensor | None]:
        """The random numbers of ``epoch`` (0-based): a generator seeded from the run's seed and
        the epoch, so that a resumed run sees exactly the same shuffles; and under torchrun the
        indices of this process's share of the epoch, as ``DistributedSampler`` gives them
        (None on one process)."""
        generator = torch.Generator().manual_seed(self.seed * 1000 + epoch)
        share = None
        if self.job is not None:
            share = distributed.shard(images, self.seed * 1000, epoch, self.job)
        return generator, share

    def load(self, saved: dict[str, Any], path: str) -> None:
        """``--resume``: take the weights and the optimizer state of the checkpoint ``saved``
        (read from ``path``). The optimizer keeps its momentum but takes this run's learning
        rate (recipes with a schedule then set it each step)."""
        if saved.get("arch") != self.arch:
            raise CourseError(
                f"'{path}' was saved from {saved.get('arch')}, not {self.arch}; resume it with "
                f"the --recipe that wrote it."
            )
        check_resumable(saved, path, self.model, self.optimizer)
        check_values(saved["model"], Path(path))
        settings = [
            {k: v for k, v in g.items() if k != "params"} for g in self.optimizer.param_groups
        ]
        try:
            self.model.load_state_dict(saved["model"])
            if saved["optimizer"] is not None:
                self.optimizer.load_state_dict(saved["optimizer"])
        except (RuntimeError, ValueError, KeyError, TypeError, IndexError) as exc:
            raise _unresumable(path, f"does not load ({str(exc).splitlines()[0]})") from exc
        # The momentum buffers go on; the settings are this run's (a checkpoint's own could
        # have been edited: maximize=True, momentum="abc")
        for group, mine in zip(self.optimizer.param_groups, settings, strict=True):
            group.update(mine)
            group["lr"] = self.hyper.lr

    def check(self, saved: dict[str, Any] | None) -> None:
        """Refuse, before anything is written, settings that cannot be followed here (``saved``:
        the checkpoint being resumed, if any)."""

    def start(self, saved: dict[str, Any] | None) -> str:
        """Get ready to train, once the weights are final and the run is allowed (load the
        data, wrap for DDP, probe a precision); return the line that describes the run."""
        raise NotImplementedError

    def train_epoch(self, epoch: int, writer: SummaryWriter | None) -> float | torch.Tensor:
        """Train one epoch (``epoch`` counts from 0); return this process's mean loss."""
        raise NotImplementedError

    def evaluate(self, epoch: int) -> dict[str, float]:
        """Rank 0, after epoch ``epoch`` (from 1): test ``tested``; the history's entries."""
        raise NotImplementedError

    def extra(self) -> dict[str, Any]:
        """Entries a checkpoint holds besides the weights, the optimizer and the history."""
        return {}

    def close(self) -> None:
        """Undo what ``start`` changed outside the recipe (a global setting of PyTorch's)."""

    def report(self, history: History) -> list[str]:
        """The run's last lines."""
        return [f"final test accuracy: {history[-1]['test_accuracy']:.2%}"]


def _unresumable(path: str, what: str) -> CourseError:
    return CourseError(
        f"'{path}' {what}: the file is damaged or was edited, so training cannot resume from "
        "it. Use another checkpoint, or start a new run from its weights with --init-from."
    )


def check_resumable(
    saved: dict[str, Any], path: str, model: nn.Module, optimizer: torch.optim.Optimizer
) -> None:
    """Refuse, in one line and before anything is loaded, a training checkpoint whose fields
    would not resume ``model`` and ``optimizer``: an epoch count that is not a whole number of
    at least 0, a history that is not a list of rows, weights whose names or shapes differ from
    the network's, or an optimizer state whose groups or buffers do not fit the optimizer's."""
    epoch = saved.get("epoch")
    if not isinstance(epoch, int) or isinstance(epoch, bool) or not 0 <= epoch <= MAX_EPOCHS:
        raise _unresumable(path, f"holds the epoch count {epoch!r}, not a whole number of epochs")
    history = saved.get("history")
    if not isinstance(history, list) or not all(
        isinstance(row, dict)
        and {"train_loss", "test_accuracy", "seconds"} <= row.keys()
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in row.values())
        for row in history
    ):
        raise _unresumable(path, "holds no history of its epochs, in numbers")
    weights, expected = saved.get("model"), model.state_dict()
    if not isinstance(weights, dict) or not all(
        isinstance(v, torch.Tensor) for v in weights.values()
    ):
        raise _unresumable(path, "holds no weights")
    if weights.keys() != expected.keys():
        missing = sorted(expected.keys() - weights.keys())[:3]
        unexpected = sorted(weights.keys() - expected.keys())[:3]
        raise _unresumable(
            path,
            f"does not fit {arch_name(model)} (missing {missing}, unexpected {unexpected})",
        )
    for name, value in weights.items():
        if value.shape != expected[name].shape:
            raise _unresumable(
                path,
                f"holds {name} of shape {list(value.shape)}, where {arch_name(model)} has "
                f"{list(expected[name].shape)}",
            )
    state = saved.get("optimizer")
    if state is None:
        return
    live = optimizer.param_groups
    groups = state.get("param_groups") if isinstance(state, dict) else None
    groups_fit = (
        isinstance(groups, list)
        and isinstance(state.get("state"), dict)
        and len(groups) == len(live)
        and all(
            isinstance(g, dict)
            and isinstance(g.get("params"), list)
            and len(g["params"]) == len(mine["params"])
            for g, mine in zip(groups, live, strict=False)
        )
    )
    if not groups_fit:
        raise _unresumable(
            path, "holds an optimizer state that does not fit the recipe's optimizer"
        )
    params = [p for group in live for p in group["params"]]
    ids = [i for group in groups for i in group["params"]]
    whole = all(isinstance(i, int) and not isinstance(i, bool) for i in ids)
    if not whole or sorted(ids) != list(range(len(params))):
        raise _unresumable(path, "numbers the optimizer's parameters wrongly")
    for key, buffers in state["state"].items():
        if key not in ids or not isinstance(buffers, dict):
            raise _unresumable(path, f"holds optimizer state for an unknown parameter {key!r}")
        param = params[ids.index(key)]
        for name, value in buffers.items():
            if name == "step":  # Adam's and others' counters: a number, not a buffer
                continue
            if not fits(value, param):
                raise _unresumable(
                    path,
                    f"holds an optimizer {name} that is not finite numbers of the shape "
                    f"{list(param.shape)} of its parameter",
                )


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and PyTorch (all devices) so a run can be repeated."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def checkpoint_path(out: str | Path, epoch: int, arch: str = "lesson_net") -> Path:
    """Where the checkpoint after ``epoch`` (1-based) is saved."""
    return Path(out) / f"{arch}_epoch{epoch:02d}.pt"


try:  # advisory locks: Linux and macOS
    import fcntl
except ImportError:  # Windows: --out is not locked there
    fcntl = None  # type: ignore[assignment]

_OWNED: dict[Path, int] = {}  # the --out folders this process trains into: their locked descriptor


def own_out(out: str | Path) -> None:
    """Hold an advisory lock on the ``--out`` folder until ``release_out``, so that a second run
    into the same folder, in another process, is refused instead of mixing its checkpoints with
    this run's. Then remove the temporary files that saves killed half-way left there (no other
    run writes into the folder now). The lock is the folder's own (``flock`` on the directory),
    so no file is added; the operating system drops it when the process ends, however it ends.
    Without ``fcntl`` (Windows) there is no lock."""
    folder = Path(os.path.realpath(out))
    if fcntl is None or folder in _OWNED:
        return
    folder.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(descriptor)
        raise CourseError(
            f"--out '{out}' is in use by another training run; wait for it to end, or give "
            "another --out."
        ) from None
    _OWNED[folder] = descriptor
    # a killed save's, named by checkpoints.atomic_save ".NAME.XXXXXXXX.tmp": of checkpoints only
    for stale in folder.glob(".*_epoch[0-9]*.pt.*.tmp"):
        if stale.is_file() and not stale.is_symlink():
            stale.unlink(missing_ok=True)


def release_out(out: str | Path) -> None:
    """Give up the lock that ``own_out`` took on ``out``, if this process holds it."""
    descriptor = _OWNED.pop(Path(os.path.realpath(out)), None)
    if descriptor is not None:
        os.close(descriptor)


def existing_checkpoints(out: str, arch: str, done: int, epochs: int) -> list[Path]:
    """The checkpoints a run would write (after epochs ``done + 1`` to ``epochs``) that are
    already in ``out``: one look at the folder, however many epochs are asked for."""
    folder = Path(out)
    if not folder.is_dir():
        return []
    found = []
    for path in sorted(folder.iterdir()):
        number = path.name.removeprefix(f"{arch}_epoch").removesuffix(".pt")
        if number.isdigit() and done < int(number) <= epochs:
            if path.name == checkpoint_path(folder, int(number), arch).name:
                found.append(path)
    return found


def _out_holds(out: str, existing: list[Path]) -> CourseError:
    names = ", ".join(p.name for p in existing[:2]) + (", ..." if len(existing) > 2 else "")
    return CourseError(
        f"--out '{out}' already holds {names} of an earlier run; give another --out, move those "
        "files away, or add --overwrite to replace them."
    )


def _logdir_holds(logdir: str) -> CourseError:
    return CourseError(
        f"--logdir '{logdir}' already holds an earlier run's TensorBoard events, which "
        "TensorBoard would draw as one curve with this run's; give another --logdir, or add "
        "--overwrite to replace them."
    )


def _earlier_events(logdir: str) -> tuple[list[Path], list[Path]]:
    """The TensorBoard event files in ``logdir``: (the empty ones, a full disk's leftovers with no
    curve and so no run; the others)."""
    events = sorted(Path(logdir).glob("events.out.tfevents.*"))
    empty = [p for p in events if p.is_file() and p.stat().st_size == 0]
    return empty, [p for p in events if p not in empty]


def refuse_early(run: RunConfig, logdir: str, archs: Iterable[str], epochs: int) -> None:
    """Before a recipe spends time choosing its network (the speed-run's ``--budget`` probe):
    refuse, as ``refuse_to_overwrite`` would afterwards, a new run without ``--overwrite`` whose
    ``--out`` holds checkpoints of any of ``archs`` (up to ``epochs``) or whose ``logdir`` holds
    an earlier run's events. Writes nothing."""
    if run.overwrite:
        return
    existing = [p for arch in archs for p in existing_checkpoints(run.out, arch, 0, epochs)]
    if existing:
        raise _out_holds(run.out, existing)
    if _earlier_events(logdir)[1]:
        raise _logdir_holds(logdir)


def refuse_to_overwrite(
    run: RunConfig, logdir: str, arch: str, done: int, epochs: int, job: Distributed | None
) -> None:
    """Stop before training if this run would write over an earlier run's files.

    - A checkpoint it would write (after epochs ``done + 1`` to ``epochs``) is already in
      ``run.out``: ``run.overwrite`` allows replacing it, unless it is the file ``--init-from``
      starts from.
    - A new run (not a resumed one, nor a torchrun restart of this job) finds an earlier run's
      TensorBoard events in ``logdir``, where TensorBoard would draw both runs' curves as one:
      ``run.overwrite`` removes them. Only rank 0, the one process that logs, checks.

    Then rank 0, the one process that saves, owns ``run.out`` until the run ends (``own_out``).
    """
    existing = existing_checkpoints(run.out, arch, done, epochs)
    for path in existing:  # --overwrite replaces files, not a folder or a device of that name
        if path.is_symlink() or not path.is_file():
            raise CourseError(
                f"--out '{run.out}' holds {path.name}, which is not a file (a folder, a link or "
                "a device), where this run would save a checkpoint; move it away, or give "
                "another --out."
            )
    source = Path(run.init_from) if run.init_from else None
    if source is not None and source.exists() and any(p.samefile(source) for p in existing):
        raise CourseError(
            f"--init-from '{run.init_from}' would be overwritten by this run's checkpoints; "
            "give another --out."
        )
    if existing and not run.overwrite:
        raise _out_holds(run.out, existing)
    # Rank 0 alone: it is the one that logs, and it may already have started its log when
    # another process gets here. If it stops, torchrun stops the others.
    new_run = done == 0 and (job is None or (job.restart == 0 and job.is_main))
    empty, events = _earlier_events(logdir) if new_run else ([], [])
    if events and not run.overwrite:
        raise _logdir_holds(logdir)
    if job is None or job.is_main:
        own_out(run.out)  # before any file is removed: a run that is refused removes nothing
        late = [p for p in existing_checkpoints(run.out, arch, done, epochs) if p not in existing]
        if late and not run.overwrite:  # written between the check above and the lock
            release_out(run.out)
            raise CourseError(
                f"--out '{run.out}' now holds {late[0].name}, written by another run; give "
                "another --out."
            )
    for path in [*empty, *events]:
        if path.is_dir() and not path.is_symlink():
            raise CourseError(
                f"--logdir '{logdir}' holds a folder named {path.name}, where TensorBoard writes "
                "its events; move it away, or give another --logdir."
            )
        path.unlink()


def starting_point(
    run: RunConfig, arch: str, job: Distributed | None, log: Log
) -> tuple[str | None, str | None]:
    """(the checkpoint to resume, the file to take weights from): ``--resume`` and
    ``--init-from`` as given, except after a torchrun restart, where the job goes on from its
    own last checkpoint. Without one yet, the restart begins where the job began."""
    if job is None or job.restart == 0:
        return run.resume, run.init_from
    found = distributed.checkpoint_to_restart_from(run.out, arch, job)
    if found is None:
        again = f"from {run.resume}" if run.resume else "at epoch 1"
        log(
            f"torchrun restart {job.restart}: no checkpoint of this job yet, starting again {again}"
        )
        return run.resume, run.init_from
    log(f"torchrun restart {job.restart}: resuming from {found}")
    return str(found), None


def resume(recipe: Recipe, path: str, epochs: int, log: Log) -> tuple[dict[str, Any], int, History]:
    """Load the checkpoint ``path`` into ``recipe``; return (the checkpoint, epochs done,
    history). Refuses a checkpoint that has already trained ``epochs``."""
    saved = load_checkpoint(path, map_location=recipe.device)
    recipe.load(saved, path)
    done, history = saved["epoch"], list(saved["history"])
    if done >= epochs:
        raise CourseError(
            f"'{path}' has already trained {done} epochs; pass --epochs larger than {done} to "
            "train more."
        )
    log(f"resumed from {path} after epoch {done}")
    return saved, done, history


def init_from(path: str, model: nn.Module, trust_pickle: bool, log: Log) -> None:
    """Copy the weights of ``path`` (any file ``load_model`` accepts) into ``model``.

    The run itself starts fresh: epoch 1, a new optimizer state, an empty history.
    """
    source = load_model(path, trust_pickle=trust_pickle, log=log)
    try:
        copy_weights(source, model)
    except ValueError as exc:
        raise CourseError(
            f"--init-from '{path}' holds {arch_name(source)}, which does not fit "
            f"{arch_name(model)}: choose the --recipe that trained it"
            + (
                f" and --network {arch_name(source)}."
                if arch_name(source).startswith("speed_net")
                else "."
            )
        ) from exc
    log(f"starting from the weights in {path} (epoch 1, new optimizer state)")


def stop_if_diverged(train_loss: float, epoch: int) -> None:
    """Stop, before saving, a run whose training loss is no longer a number."""
    if not math.isfinite(train_loss):
        raise CourseError(
            f"the training loss became {train_loss} in epoch {epoch}, so the weights are no longer "
            "numbers and this epoch was not saved (earlier checkpoints are kept); lower --lr, and "
            "add --overwrite to replace this run's TensorBoard log when you run it again."
        )


def stopped_message(job: Distributed, out: str, reason: str) -> str:
    """The one line of a process whose torchrun job lost another process: what happened
    (``reason``), and the command's way on from the last checkpoint in ``out``."""
    saved = sorted(Path(out).glob("*_epoch[0-9]*.pt"), key=lambda p: (len(p.stem), p.stem))
    way_on = (
        f"the checkpoints already written are intact: to go on, run the same command with "
        f"--resume {saved[-1]}"
        if saved
        else "no checkpoint was written yet: run the same command again"
    )
    return (
        f"process {job.rank} of {job.world_size} stopped, because another process of this "
        f"torchrun job ended first ({reason}); {way_on}."
    )


@contextmanager
def _naming(logdir: str) -> Iterator[None]:
    """TensorBoard's writer reports a failed write (a full disk) without a file name: give it
    the log folder's, so that the one line says where."""
    try:
        yield
    except OSError as exc:
        if exc.filename is not None:
            raise
        raise OSError(exc.errno, exc.strerror, logdir) from None


def _quiet_writer_thread(args: threading.ExceptHookArgs) -> None:
    """TensorBoard writes its events in a thread of its own; when a write fails (a full disk),
    the thread dies with a traceback, and the writer's next call in the training loop raises the
    same error, which the command line reports in one line. So that thread's traceback is not
    printed; any other thread's is."""
    if type(args.thread).__name__ != "_AsyncWriterThread":
        threading.__excepthook__(args)


def quiet(message: str) -> None:
    """The log of every process but rank 0 under torchrun: one voice is enough."""


OnEpoch = Callable[[Recipe, dict[str, float]], None]


def fit(
    recipe: type[Recipe],
    run: RunConfig | None = None,
    hyper: Hyper | None = None,
    log: Log = print,
    on_epoch: OnEpoch | None = None,
) -> History:
    """Train ``recipe`` with its hyper-parameters ``hyper`` (its defaults if None) as ``run``
    says, checkpointing each epoch; return the per-epoch history (rank 0's; the others'
    is empty). ``on_epoch(recipe, row)`` is called on rank 0 after each epoch is saved.

    Under torchrun it trains with DistributedDataParallel (see ``cifar_course.distributed``).
    """
    run = run or RunConfig()
    run.validate()
    if hyper is not None and type(hyper) is not recipe.hyper_type:
        raise CourseError(
            f"the {recipe.name} recipe takes {recipe.hyper_type.__name__}, not "
            f"{type(hyper).__name__}."
        )
    hyper = (hyper or recipe.hyper_type()).resolved(pick_device(run.device).type)
    hyper.validate()
    logdir = run.logdir or recipe.logdir
    if run.logdir is None:  # a given one was checked by run.validate
        _check_writable(Path(logdir), "--logdir")
    job = distributed.start(run.device)
    log = log if job is None or job.is_main else quiet
    try:
        device = job.device if job is not None else pick_device(run.device)
        planned = hyper.planned(run, device, job, log)
        if planned is not hyper:
            planned.validate()
            hyper = planned
        return _train(recipe, run, hyper, logdir, device, job, log, on_epoch)
    except (distributed.Stopped, RuntimeError) as exc:
        reason = distributed.lost_a_process(exc) if job is not None else None
        if job is None or reason is None:
            raise
        raise CourseError(stopped_message(job, run.out, reason)) from None
    finally:
        release_out(run.out)  # taken by refuse_to_overwrite, once the run is allowed
        distributed.stop(job)


def _train(
    recipe_type: type[Recipe],
    run: RunConfig,
    hyper: Hyper,
    logdir: str,
    device: torch.device,
    job: Distributed | None,
    log: Log,
    on_epoch: OnEpoch | None,
) -> History:
    seed_everything(run.seed)
    recipe = recipe_type(hyper, device, job, run.seed, log)
    resume_from, weights_from = starting_point(run, recipe.arch, job, log)
    saved, start, history = None, 0, []
    if resume_from:
        saved, start, history = resume(recipe, resume_from, hyper.epochs, log)
    recipe.check(saved)
    if weights_from:
        init_from(weights_from, recipe.model, run.trust_pickle, log)
    refuse_to_overwrite(run, logdir, recipe.arch, start, hyper.epochs, job)
    settings = {"recipe": recipe.name, **asdict(run), "logdir": logdir, **asdict(hyper)}
    settings |= {"resume": resume_from, "init_from": weights_from}  # after a restart, its own
    settings["run_id"] = job.run_id if job is not None else ""  # finds the job's own checkpoints
    writer = None
    hook = threading.excepthook
    threading.excepthook = _quiet_writer_thread
    try:
        log(recipe.start(saved))
        step = start * recipe.steps_per_epoch
        with _naming(logdir):
            writer = SummaryWriter(logdir, purge_step=step or None) if recipe.main else None
        for epoch in range(start, hyper.epochs):
            synchronize(device)  # the last epoch's test and checkpoint are not training time
            began = time.perf_counter()
            loss = recipe.train_epoch(epoch, writer)
            synchronize(device)  # GPU work is queued: wait for it before reading the clock
            seconds = time.perf_counter() - began + (recipe.setup_seconds if epoch == 0 else 0.0)
            step += recipe.steps_per_epoch
            train_loss = distributed.mean_over_processes(float(loss), job)
            stop_if_diverged(train_loss, epoch + 1)  # on every process: they hold the same loss
            if writer is not None:  # rank 0: test the whole test set once, save, log
                metrics = recipe.evaluate(epoch + 1)
                with _naming(logdir):
                    if not recipe.logs_steps:
                        writer.add_scalar("train_loss", train_loss, step)
                    for name, value in metrics.items():
                        writer.add_scalar(name, value, epoch + 1)
                    writer.flush()
                row = {"epoch": epoch + 1, "train_loss": train_loss, **metrics, "seconds": seconds}
                history.append(row)
                path = save_checkpoint(
                    checkpoint_path(run.out, epoch + 1, recipe.arch),
                    recipe.tested,
                    recipe.optimizer,
                    epoch + 1,
                    history,
                    settings,
                    recipe.extra(),
                )
                test_loss = f"  test loss {row['test_loss']:.4f}" if "test_loss" in row else ""
                log(
                    f"epoch {epoch + 1:2d}/{hyper.epochs}  train loss {train_loss:.4f}"
                    f"{test_loss}  test accuracy {row['test_accuracy']:.2%}  ({seconds:.1f} s)  "
                    f"saved {path}"
                )
                if on_epoch is not None:
                    on_epoch(recipe, row)
            distributed.barrier(job)  # the others wait while rank 0 evaluates and saves
    finally:
        recipe.close()
        try:
            if writer is not None:
                writer.close()
        except OSError:
            pass  # the first error is the one to report
        threading.excepthook = hook
    if recipe.main:
        for line in recipe.report(history):
            log(line)
    return history if recipe.main else []
