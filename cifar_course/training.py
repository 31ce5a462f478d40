"""The lesson's training recipe: one epoch, evaluation, and the run behind ``cifar-course train``.

The seed recipe is the lecture's: the lesson net, CrossEntropyLoss, SGD at lr 1e-2, batch 64,
10 epochs, ``ToTensor`` only. Lesson 03 writes this loop out by hand; these helpers are what the
command line and later lessons reuse.
"""

from __future__ import annotations

import math
import os
import random
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from torch.utils.tensorboard import SummaryWriter

# Text progress bars: a notebook widget leaves "model not found" behind once saved and reopened.
from tqdm import tqdm

from . import distributed
from .checkpoints import check_values, load_checkpoint, load_model, save_checkpoint
from .data import TensorData, get_datasets
from .device import pick_device
from .distributed import Distributed
from .errors import CourseError
from .fast import FastTrainer
from .models import arch_name, build_model, copy_weights

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and PyTorch (all devices) so a run can be repeated."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def train_one_epoch(
    model: nn.Module,
    batches: Batches,
    loss_fn: nn.Module,
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    writer: SummaryWriter | None = None,
    step: int = 0,
    log_every: int = 100,
    desc: str = "train",
    progress: bool = True,
) -> tuple[float, int]:
    """Train for one pass over ``batches``; return ``(mean loss, global step after the epoch)``.

    Logs the loss of every ``log_every``-th step to TensorBoard as ``train_loss``; ``progress``
    shows a progress bar.
    """
    model.train()
    total = torch.zeros((), device=device)
    count = 0
    for images, targets in tqdm(
        batches, desc=desc, leave=False, disable=not progress, file=progress_stream()
    ):
        images, targets = images.to(device), targets.to(device)
        loss = loss_fn(model(images), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        step += 1
        total += loss.detach() * len(targets)
        count += len(targets)
        if writer is not None and step % log_every == 0:
            writer.add_scalar("train_loss", loss.item(), step)
    if count == 0:
        raise CourseError("The training data is empty; there is nothing to train on.")
    return (total / count).item(), step


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


def evaluate(
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


@dataclass
class TrainConfig:
    """Settings of one ``cifar-course train`` run; the defaults are the lecture's seed recipe."""

    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-2
    device: str = "auto"
    seed: int = 0
    out: str = "checkpoints"
    logdir: str = "runs/lesson_net"
    resume: str | None = None
    init_from: str | None = None
    trust_pickle: bool = False
    log_every: int = 100
    fast: bool = False
    recipe: str = "lecture"
    ema: bool = False  # speedrun only: evaluate and save an average of the weights
    lookahead: bool = True  # speedrun only: pull the weights back to a slow average every 5 steps
    precision: str = "auto"  # speedrun only: "auto" (see speedrun.uses_bf16), "fp32" or "bf16"
    overwrite: bool = False  # replace an earlier run's checkpoints (out) and events (logdir)
    run_id: str = ""  # torchrun's job id, so that a restarted job finds its own checkpoints

    def validate(self) -> None:
        """Reject settings that cannot work, before anything is written."""
        if not 1 <= self.epochs <= MAX_EPOCHS:
            raise CourseError(f"--epochs must be from 1 to {MAX_EPOCHS:,}, got {self.epochs}.")
        if not 1 <= self.batch_size <= MAX_BATCH:
            raise CourseError(
                f"--batch-size must be from 1 to {MAX_BATCH:,} (CIFAR-10's training set), got "
                f"{self.batch_size}."
            )
        if not 0 < self.lr <= MAX_LR:
            raise CourseError(f"--lr must be a positive number up to {MAX_LR:g}, got {self.lr}.")
        if self.precision not in ("auto", "fp32", "bf16"):
            raise CourseError(f"--precision must be auto, fp32 or bf16, got '{self.precision}'.")
        if self.resume and self.init_from:
            raise CourseError(
                "--resume continues a run and --init-from starts a new one; give only one of them."
            )
        for flag, folder in (("--out", self.out), ("--logdir", self.logdir)):
            _check_writable(Path(folder), flag)


MAX_EPOCHS = 100_000  # beyond any run that ends; a larger number is a typing slip
MAX_BATCH = 50_000  # the training set: a larger batch holds no more images
MAX_LR = 1000.0  # far above any recipe's (1.5 at most); 1e39 is not even a float32


def _check_writable(folder: Path, flag: str) -> None:
    existing = folder
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise CourseError(f"{flag} '{folder}': '{existing}' is a file, not a folder.")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise CourseError(f"{flag} '{folder}' cannot be written ('{existing}' is read-only).")


def resume(
    config: TrainConfig,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    log: Callable[[str], None] = print,
    state: dict[str, Any] | None = None,
) -> tuple[int, list[dict[str, float]]]:
    """Load ``config.resume`` into ``model`` and ``optimizer``; return (epochs done, history).

    The optimizer keeps its momentum but takes this run's learning rate, ``config.lr`` (the
    modern and speedrun recipes then set it each step from their schedules). ``state``: the
    checkpoint, when the caller has already loaded it for more of its contents.
    """
    if state is None:
        state = load_checkpoint(config.resume, map_location=device)
    arch = arch_name(model)
    if state.get("arch") != arch:
        device = " on the same kind of device (a GPU or a CPU)" if "speed_net" in arch else ""
        raise CourseError(
            f"'{config.resume}' was saved from {state.get('arch')}, not {arch}; resume it with "
            f"the --recipe that wrote it{device}."
        )
    check_values(state["model"], Path(config.resume))
    model.load_state_dict(state["model"])
    if state["optimizer"] is not None:
        optimizer.load_state_dict(state["optimizer"])
        for group in optimizer.param_groups:
            group["lr"] = config.lr
    done, history = state["epoch"], list(state["history"])
    if done >= config.epochs:
        raise CourseError(
            f"'{config.resume}' has already trained {done} epochs; pass --epochs larger "
            f"than {done} to train more."
        )
    log(f"resumed from {config.resume} after epoch {done}")
    return done, history


def init_from(config: TrainConfig, model: nn.Module, log: Callable[[str], None] = print) -> None:
    """Copy the weights of ``config.init_from`` (any file ``load_model`` accepts) into ``model``.

    The run itself starts fresh: epoch 1, a new optimizer state, an empty history.
    """
    source = load_model(config.init_from, trust_pickle=config.trust_pickle, log=log)
    try:
        copy_weights(source, model)
    except ValueError as exc:
        raise CourseError(
            f"--init-from '{config.init_from}' holds {arch_name(source)}, which does not fit "
            f"{arch_name(model)}: choose the --recipe that trained it"
            + (" and the same kind of device." if "speed_net" in arch_name(model) else ".")
        ) from exc
    log(f"starting from the weights in {config.init_from} (epoch 1, new optimizer state)")


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
    folder = Path(out).resolve()
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
    for stale in folder.glob(".*.tmp"):  # a killed save's, named by checkpoints.atomic_save
        stale.unlink(missing_ok=True)


def release_out(out: str | Path) -> None:
    """Give up the lock that ``own_out`` took on ``out``, if this process holds it."""
    descriptor = _OWNED.pop(Path(out).resolve(), None)
    if descriptor is not None:
        os.close(descriptor)


def existing_checkpoints(config: TrainConfig, arch: str, done: int) -> list[Path]:
    """The checkpoints this run would write (after epochs ``done + 1`` to ``config.epochs``) that
    are already in ``config.out``: one look at the folder, however many epochs are asked for."""
    folder = Path(config.out)
    if not folder.is_dir():
        return []
    found = []
    for path in sorted(folder.iterdir()):
        number = path.name.removeprefix(f"{arch}_epoch").removesuffix(".pt")
        if number.isdigit() and done < int(number) <= config.epochs:
            if path.name == checkpoint_path(folder, int(number), arch).name:
                found.append(path)
    return found


def refuse_to_overwrite(
    config: TrainConfig, arch: str, done: int, job: Distributed | None = None
) -> None:
    """Stop before training if this run would write over an earlier run's files.

    - A checkpoint it would write (after epochs ``done + 1`` to ``config.epochs``) is already in
      ``config.out``: ``config.overwrite`` allows replacing it, unless it is the file
      ``--init-from`` starts from.
    - A new run (not a resumed one, nor a torchrun restart of this job) finds an earlier run's
      TensorBoard events in ``config.logdir``, where TensorBoard would draw both runs' curves as
      one: ``config.overwrite`` removes them. Only rank 0, the one process that logs, checks.
    """
    existing = existing_checkpoints(config, arch, done)
    source = Path(config.init_from) if config.init_from else None
    if source is not None and source.exists() and any(p.samefile(source) for p in existing):
        raise CourseError(
            f"--init-from '{config.init_from}' would be overwritten by this run's checkpoints; "
            "give another --out."
        )
    if existing and not config.overwrite:
        names = ", ".join(p.name for p in existing[:2]) + (", ..." if len(existing) > 2 else "")
        raise CourseError(
            f"--out '{config.out}' already holds {names} of an earlier run; give another --out, "
            "move those files away, or add --overwrite to replace them."
        )
    # Rank 0 alone: it is the one that logs, and it may already have started its log when
    # another process gets here. If it stops, torchrun stops the others.
    new_run = done == 0 and (job is None or (job.restart == 0 and job.is_main))
    events = sorted(Path(config.logdir).glob("events.out.tfevents.*")) if new_run else []
    if events and not config.overwrite:
        raise CourseError(
            f"--logdir '{config.logdir}' already holds an earlier run's TensorBoard events, which "
            "TensorBoard would draw as one curve with this run's; give another --logdir, or add "
            "--overwrite to replace them."
        )
    for path in events:
        path.unlink()
    if job is None or job.is_main:  # the one process that saves owns --out from here on
        own_out(config.out)
        late = [p for p in existing_checkpoints(config, arch, done) if p not in existing]
        if late and not config.overwrite:  # written between the check above and the lock
            release_out(config.out)
            raise CourseError(
                f"--out '{config.out}' now holds {late[0].name}, written by another run; give "
                "another --out."
            )


def stop_if_diverged(train_loss: float, epoch: int) -> None:
    """Stop, before saving, a run whose training loss is no longer a number."""
    if not math.isfinite(train_loss):
        raise CourseError(
            f"the training loss became {train_loss} in epoch {epoch}, so the weights are no longer "
            "numbers and this epoch was not saved (earlier checkpoints are kept); lower --lr, and "
            "add --overwrite to replace this run's TensorBoard log when you run it again."
        )


def save_epoch(
    config: TrainConfig,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    epoch: int,
    history: list[dict[str, float]],
    extra: dict[str, Any] | None = None,
) -> Path:
    """Save the training checkpoint after ``epoch`` (1-based) in ``config.out``, with a recipe's
    ``extra`` entries; return the path."""
    path = checkpoint_path(config.out, epoch, arch_name(model))
    return save_checkpoint(path, model, optimizer, epoch, history, asdict(config), extra)


def quiet(message: str) -> None:
    """The log of every process but rank 0 under torchrun: one voice is enough."""


def restart_resume(
    config: TrainConfig, arch: str, job: Distributed | None, log: Callable[[str], None]
) -> None:
    """After a torchrun restart, point ``config.resume`` at this job's last checkpoint.

    Without one yet, the restart begins where the job began: ``--resume``'s file, or epoch 1.
    """
    if job is None:
        return
    config.run_id = job.run_id
    if job.restart == 0:
        return
    found = distributed.checkpoint_to_restart_from(config.out, arch, job)
    if found is None:
        again = f"from {config.resume}" if config.resume else "at epoch 1"
        log(
            f"torchrun restart {job.restart}: no checkpoint of this job yet, starting again {again}"
        )
        return
    log(f"torchrun restart {job.restart}: resuming from {found}")
    config.resume, config.init_from = str(found), None


Recipe = Callable[[TrainConfig, Distributed | None, Callable[[str], None]], list[dict[str, float]]]


def run_recipe(
    recipe: Recipe, config: TrainConfig, log: Callable[[str], None]
) -> list[dict[str, float]]:
    """Validate ``config``, join torchrun's process group if there is one, run ``recipe`` with
    this process's log (rank 0's is ``log``, the others' ``quiet``), and leave the group."""
    config.validate()
    job = distributed.start(config.device)
    try:
        return recipe(config, job, log if job is None or job.is_main else quiet)
    finally:
        release_out(config.out)  # taken by refuse_to_overwrite, once the run is allowed
        distributed.stop(job)


def fit(config: TrainConfig, log: Callable[[str], None] = print) -> list[dict[str, float]]:
    """Run the seed recipe as configured, checkpointing each epoch; return the per-epoch history.

    Under torchrun it trains with DistributedDataParallel (see ``cifar_course.distributed``).
    """
    return run_recipe(_fit, config, log)


def _fit(
    config: TrainConfig, job: Distributed | None, log: Callable[[str], None]
) -> list[dict[str, float]]:
    main = job is None or job.is_main
    device = job.device if job is not None else pick_device(config.device)
    batch_size = distributed.per_process_batch(config.batch_size, job)
    seed_everything(config.seed)
    train_set, test_set = get_datasets()
    model = build_model("lesson_net").to(device)
    loss_fn = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr)
    history: list[dict[str, float]] = []
    start_epoch = 0
    restart_resume(config, "lesson_net", job, log)
    if config.resume:
        start_epoch, history = resume(config, model, optimizer, device, log)
    if config.init_from:
        init_from(config, model, log)
    refuse_to_overwrite(config, "lesson_net", start_epoch, job)
    test_loader = DataLoader(test_set, batch_size=config.batch_size)
    share = len(train_set) if job is None else -(-len(train_set) // job.world_size)
    steps_per_epoch = -(-share // batch_size)
    writer = (
        SummaryWriter(config.logdir, purge_step=start_epoch * steps_per_epoch or None)
        if main
        else None
    )
    trainer = fast_train = fast_test = None
    if config.fast:
        fast_train = TensorData(True, device)
        fast_test = TensorData(False, device) if main else None
        if job is None:
            trainer = FastTrainer(
                model, optimizer, device, probe_data=fast_train, batch_size=batch_size
            )
            log(f"fast loop: mixed precision {trainer.dtype or 'off (fp32)'} after a speed probe")
        else:  # each process would probe on its own and might choose differently: stay in fp32
            trainer = FastTrainer(
                model, optimizer, device, amp=False, wrap=lambda m: distributed.wrap(m, job)
            )
            log("fast loop: fp32 (under torchrun the mixed-precision probe is skipped)")
    train_model = trainer.train_model if trainer else model
    if trainer is None and job is not None:
        train_model = distributed.wrap(model, job)
    where = distributed.describe(job, device)
    per = "" if job is None else f" ({batch_size} per process)"
    log(
        f"training lesson_net on {where} with {len(train_set):,} train / {len(test_set):,} test "
        f"images: {config.epochs} epoch{'s' * (config.epochs != 1)}, batch {config.batch_size}"
        f"{per}, SGD lr {config.lr}" + (" (fast loop)" if config.fast else "")
    )
    step = start_epoch * steps_per_epoch
    try:
        for epoch in range(start_epoch, config.epochs):
            # One generator per epoch: a resumed run sees exactly the same shuffles.
            order = torch.Generator().manual_seed(config.seed * 1000 + epoch)
            began = time.perf_counter()
            if trainer is not None and fast_train is not None:
                mine = None
                if job is not None:  # this process's share of the epoch, as DistributedSampler's
                    mine = distributed.shard(len(fast_train), config.seed * 1000, epoch, job)
                train_loss = trainer.train_epoch(fast_train, batch_size, order, order=mine).item()
                step += steps_per_epoch
                if writer is not None:
                    writer.add_scalar("train_loss", train_loss, step)
            else:
                if job is None:
                    loader = DataLoader(train_set, batch_size, shuffle=True, generator=order)
                else:
                    sampler = distributed.sampler(len(train_set), config.seed * 1000, job)
                    sampler.set_epoch(epoch)  # a new shuffle each epoch, the same on every process
                    loader = DataLoader(train_set, batch_size, sampler=sampler)
                train_loss, step = train_one_epoch(
                    train_model,
                    loader,
                    loss_fn,
                    optimizer,
                    device,
                    writer,
                    step,
                    config.log_every,
                    desc=f"epoch {epoch + 1}/{config.epochs}",
                    progress=main,
                )
            seconds = time.perf_counter() - began
            train_loss = distributed.mean_over_processes(train_loss, job)
            stop_if_diverged(train_loss, epoch + 1)  # on every process: they hold the same loss
            if main:  # the whole test set, once, on rank 0 with the plain model
                if trainer is not None and fast_test is not None:
                    test_loss, accuracy = trainer.evaluate(fast_test)
                else:
                    test_loss, accuracy = evaluate(model, test_loader, loss_fn, device)
                assert writer is not None
                writer.add_scalar("test_loss", test_loss, epoch + 1)
                writer.add_scalar("test_accuracy", accuracy, epoch + 1)
                writer.flush()
                history.append(
                    {
                        "epoch": epoch + 1,
                        "train_loss": train_loss,
                        "test_loss": test_loss,
                        "test_accuracy": accuracy,
                        "seconds": seconds,
                    }
                )
                path = save_epoch(config, model, optimizer, epoch + 1, history)
                log(
                    f"epoch {epoch + 1:2d}/{config.epochs}  train loss {train_loss:.4f}  "
                    f"test loss {test_loss:.4f}  test accuracy {accuracy:.2%}  "
                    f"({seconds:.1f} s)  saved {path}"
                )
            distributed.barrier(job)  # the others wait while rank 0 evaluates and saves
    finally:
        if writer is not None:
            writer.close()
    if main:
        log(f"final test accuracy: {history[-1]['test_accuracy']:.2%}")
    return history
