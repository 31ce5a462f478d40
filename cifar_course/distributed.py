"""Training on several processes with PyTorch's own engine: ``torch.distributed``, launched by
``torchrun``, with ``DistributedDataParallel`` (DDP).

``torchrun --nproc-per-node N -m cifar_course train ...`` starts N copies of the command and
gives each the environment variables ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE``. Each copy then:

- joins the process group (NCCL on CUDA GPUs, gloo on the CPU) and, on a GPU machine, uses the
  GPU numbered ``LOCAL_RANK``;
- trains an identical replica of the model, wrapped in DDP, which averages the gradients of all
  processes with an all-reduce during ``backward()``;
- reads its own share of each epoch's shuffled order, from ``DistributedSampler``.

``--batch-size`` is the *global* batch: each of the N processes takes ``batch_size / N`` images
per step, so a run takes the same steps whatever N is. Only rank 0 prints, writes TensorBoard
events, evaluates and saves checkpoints; the checkpoints hold the plain model's ``state_dict``.
Without torchrun's variables nothing here runs, and no process group is started.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data.distributed import DistributedSampler

from .errors import CourseError

TORCHRUN_VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE")


@dataclass(frozen=True)
class Distributed:
    """This process's place in a torchrun job."""

    rank: int
    local_rank: int
    world_size: int
    device: torch.device
    run_id: str  # torchrun's id of the job, the same across its restarts
    restart: int  # 0 on the first attempt, 1 after torchrun's first restart, ...

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that prints, logs, evaluates and saves."""
        return self.rank == 0


def launched_by_torchrun() -> bool:
    """Whether torchrun (or another launcher that sets the same variables) started us."""
    return all(name in os.environ for name in TORCHRUN_VARIABLES)


class Stopped(Exception):
    """torchrun stopped this process (SIGTERM): another process of the job ended first."""


def _stopped_by_torchrun(signum: int, frame: object) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # once is enough: let the clean-up finish
    raise Stopped("torchrun stopped it")


_PEER_GONE = {  # what PyTorch's process groups say when another process has gone
    "Connection closed by peer": "its connection closed",
    "Connection reset by peer": "its connection was reset",
    "Broken pipe": "its connection broke",
    "timed out": "it stopped answering",
}


def lost_a_process(exc: BaseException) -> str | None:
    """Why ``exc`` says that another process of the job is gone, in a few words (torchrun's
    SIGTERM, or a collective operation whose peer went away); None if it says no such thing."""
    if isinstance(exc, Stopped):
        return "torchrun stopped this one"
    if not isinstance(exc, RuntimeError):
        return None
    text = str(exc)
    for words, reason in _PEER_GONE.items():
        if words in text:
            return reason
    return "its process group failed" if isinstance(exc, dist.DistError) else None


def start(device_name: str = "auto") -> Distributed | None:
    """Join torchrun's process group and pick this process's device; None without torchrun.

    Under torchrun, SIGTERM (which torchrun sends to every process once one of them has
    failed) raises ``Stopped``, so that the process can say so in one line instead of dying
    without a word."""
    if not launched_by_torchrun():
        return None
    signal.signal(signal.SIGTERM, _stopped_by_torchrun)
    rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    world_size = int(os.environ["WORLD_SIZE"])
    if device_name == "mps":
        raise CourseError(
            "torchrun cannot use --device mps: PyTorch's distributed training runs on CUDA GPUs "
            "(NCCL) and on the CPU (gloo). Use --device cpu."
        )
    if device_name in ("auto", "cuda") and torch.cuda.is_available():
        if local_rank >= torch.cuda.device_count():
            raise CourseError(
                f"torchrun started process {local_rank} on this machine, but it has only "
                f"{torch.cuda.device_count()} GPU(s): use --nproc-per-node "
                f"{torch.cuda.device_count()} or fewer."
            )
        device, backend = torch.device("cuda", local_rank), "nccl"
        torch.cuda.set_device(device)
    elif device_name == "cuda":
        raise CourseError("--device cuda was asked for, but PyTorch sees no CUDA GPU here.")
    else:
        device, backend = torch.device("cpu"), "gloo"
    restart = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
    store = _store_for_this_attempt(world_size, restart)
    if store is None:
        dist.init_process_group(backend)
    else:
        dist.init_process_group(backend, store=store, rank=rank, world_size=world_size)
    return Distributed(
        rank=rank,
        local_rank=local_rank,
        world_size=world_size,
        device=device,
        run_id=os.environ.get("TORCHELASTIC_RUN_ID", ""),
        restart=restart,
    )


def _store_for_this_attempt(world_size: int, restart: int) -> dist.Store | None:
    """The process group's key-value store, kept apart from those of earlier attempts.

    torchrun's workers share one store with torchrun itself, and it outlives a restart. The
    process group's keys (where each process listens) carry no attempt number, so after a
    restart a process could read a dead process's address and wait for it for good
    (pytorch/pytorch#135712). Prefixing the keys with torchrun's restart count keeps each
    attempt apart. That count is kept per machine: on several machines, run torchrun with
    ``TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1`` instead, and this returns None.
    """
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return None
    shared = dist.TCPStore(
        os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world_size, is_master=False
    )
    return dist.PrefixStore(f"cifar_course/attempt_{restart}", shared)


def stop(job: Distributed | None) -> None:
    """Leave the process group (nothing to do without torchrun), and let SIGTERM end the
    process again as it normally does."""
    if job is not None and dist.is_initialized():
        dist.destroy_process_group()
    if job is not None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def barrier(job: Distributed | None) -> None:
    """Wait until every process gets here (nothing to do without torchrun)."""
    if job is not None:
        dist.barrier()


def mean_over_processes(value: float, job: Distributed | None) -> float:
    """The mean of ``value`` over all processes (each process's mean over an equal share)."""
    if job is None:
        return value
    total = torch.tensor([value], dtype=torch.float64, device=job.device)
    dist.all_reduce(total)
    return total.item() / job.world_size


def describe(job: Distributed | None, device: torch.device) -> str:
    """Where training runs, for the first log line."""
    if job is None:
        return str(device)
    processes = "process" if job.world_size == 1 else "processes"
    return f"{job.world_size} {processes} ({device.type}, DDP)"


def per_process_batch(batch_size: int, job: Distributed | None) -> int:
    """Each process's share of the global ``--batch-size``."""
    if job is None:
        return batch_size
    if batch_size % job.world_size:
        raise CourseError(
            f"--batch-size {batch_size} is the global batch, shared by {job.world_size} "
            f"processes; choose a multiple of {job.world_size}."
        )
    return batch_size // job.world_size


def wrap(model: nn.Module, job: Distributed) -> DistributedDataParallel:
    """The model wrapped for training: gradients are averaged over all processes in backward()."""
    device_ids = [job.device.index] if job.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids)


def sampler(dataset_size: int, seed: int, job: Distributed) -> DistributedSampler:
    """This process's ``DistributedSampler``: its share of each epoch's shuffle (call set_epoch)."""
    return DistributedSampler(
        range(dataset_size), num_replicas=job.world_size, rank=job.rank, shuffle=True, seed=seed
    )


def shard(dataset_size: int, seed: int, epoch: int, job: Distributed) -> torch.Tensor:
    """The indices this process trains on in ``epoch``, exactly as ``sampler`` gives them."""
    share = sampler(dataset_size, seed, job)
    share.set_epoch(epoch)
    return torch.tensor(list(share), dtype=torch.long)


def checkpoint_to_restart_from(out: str | Path, arch: str, job: Distributed) -> Path | None:
    """After a torchrun restart, the last checkpoint this job wrote before it failed.

    Rank 0 looks in ``out`` for the highest epoch whose saved settings carry this job's run id,
    so a checkpoint of an earlier job in the same folder is not picked up; every process gets
    rank 0's answer. The run id is torchrun's ``--rdzv-id``: a fresh one with ``--standalone``,
    so on several machines give every job a new ``--rdzv-id``, and make ``out`` a folder they
    all share.
    """
    found: list[str | None] = [None]
    if job.is_main:
        for path in sorted(Path(out).glob(f"{arch}_epoch*.pt"), reverse=True):
            try:
                state = torch.load(path, map_location="cpu", weights_only=True)
            except Exception:  # an unreadable file is not one to resume from
                continue
            if (state.get("config") or {}).get("run_id") == job.run_id:
                found[0] = str(path)
                break
    dist.broadcast_object_list(found, src=0)
    return Path(found[0]) if found[0] else None
