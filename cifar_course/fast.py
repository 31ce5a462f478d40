"""The fast training path: the lesson's exact recipe, several times faster.

Same network, loss, optimizer, learning rate, batch size and epochs as the lecture; only how the
work is fed to the hardware changes:

- the whole data set sits in memory (on the GPU when there is one) as one uint8 tensor and is
  shuffled per epoch by indexing, with no PIL and no per-sample Python (``TensorData``);
- ``channels_last`` memory layout, which the CPU's and GPU's convolution kernels prefer;
- mixed precision (bf16 autocast, or fp16 with a gradient scaler on older GPUs), kept only where
  a short probe shows it pays (``precision.pays``: on a CPU at least 1.15 times as fast): on a
  2-core Xeon with AVX-512 BF16 but no AMX, oneDNN's bf16 convolutions measured half the speed of
  fp32, so there it stays off. The weights and the optimizer always stay in fp32;
- no ``.item()`` per step, so the host never waits for the device inside an epoch;
- on a CUDA GPU, the whole training step (batch gather, forward, backward, SGD update, loss sum)
  is recorded once as a CUDA graph and replayed for every full batch: one launch per step instead
  of dozens, which matters for a network this small. Only stateless plain SGD at a constant
  learning rate is graphed (the lesson's recipe); anything else runs eagerly;
- on a Linux CPU, ``malloc`` keeps freed memory for reuse instead of returning it to the kernel
  (``keep_freed_memory``), so large activations do not cost fresh, zeroed pages every step.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn

from . import precision
from .data import TensorData
from .device import keep_freed_memory


class FastTrainer:
    """Runs epochs of the seed recipe on ``TensorData`` with the speed levers switched on."""

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        device: torch.device,
        dtype: torch.dtype | None = None,
        wrap: Callable[[nn.Module], nn.Module] | None = None,
        graphs: bool | None = None,
    ) -> None:
        """``dtype``: the autocast type of the steps (bf16, or fp16 with a gradient scaler), None
        for fp32; ``fastest_dtype`` measures which pays.

        ``wrap``: train through ``wrap(model)`` (``DistributedDataParallel`` under torchrun) while
        evaluating the plain model; no CUDA graphs then.

        ``graphs``: replay each full batch's step as a CUDA graph. None means wherever it is
        possible: on CUDA, with plain SGD (no momentum, no weight decay), no wrap and no fp16
        scaler."""
        self.device = device
        self.channels_last = True
        self.want_graphs = graphs
        self._graph: torch.cuda.CUDAGraph | None = None
        self._graph_key: tuple[object, ...] = ()
        self._graph_idx = torch.zeros(0, dtype=torch.long)
        self._graph_loss_sum = torch.zeros(())
        if device.type == "cpu":
            keep_freed_memory()
        self.model = model.to(device, memory_format=torch.channels_last)
        self.train_model = wrap(self.model) if wrap is not None else self.model
        self.optimizer = optimizer
        self.loss_fn = nn.CrossEntropyLoss()
        self.dtype = dtype
        self.scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)

    def _autocast(self) -> torch.autocast:
        # No weight-cast cache: a CUDA graph must redo the casts on every replay.
        return torch.autocast(
            self.device.type,
            dtype=self.dtype,
            enabled=self.dtype is not None,
            cache_enabled=False if self.uses_graphs else None,
        )

    @property
    def uses_graphs(self) -> bool:
        """Whether full batches run as a replayed CUDA graph (see ``__init__``)."""
        possible = (
            self.device.type == "cuda"
            and self.train_model is self.model
            and type(self.optimizer) is torch.optim.SGD
            and all(
                not g["momentum"] and not g["weight_decay"] for g in self.optimizer.param_groups
            )
            and self.dtype != torch.float16
        )
        if self.want_graphs and not possible:
            raise ValueError(
                "CUDA graphs need a CUDA device, no wrap, plain SGD (no momentum or weight decay) "
                "and no fp16 gradient scaler; pass graphs=None or False."
            )
        return possible if self.want_graphs is None else bool(self.want_graphs)

    def _loss(self, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        with self._autocast():
            return self.loss_fn(self.train_model(images), targets)

    def _step(self, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        loss = self._loss(images, targets)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return loss.detach().float()

    def _capture(self, data: TensorData, batch_size: int, key: tuple[object, ...]) -> None:
        """Record one full training step on ``data`` as a CUDA graph.

        This follows PyTorch's "whole network capture" recipe: a few warm-up steps on a side
        stream, then capture with the gradients unset, so that every replay writes fresh gradients.
        The warm-up steps change the weights, so they are put back afterwards, in place (the graph
        refers to those very tensors). SGD without momentum keeps no state, so nothing else moves.
        """
        saved = [t.detach().clone() for t in self.model.state_dict().values()]
        self._graph_idx = torch.arange(batch_size, device=self.device)
        self._graph_loss_sum = torch.zeros((), device=self.device)
        benchmark = torch.backends.cudnn.benchmark
        torch.backends.cudnn.benchmark = True  # pick the fastest kernels once, for good
        try:
            side = torch.cuda.Stream(self.device)
            side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(side):
                for _ in range(3):
                    self._step(*data.batch(self._graph_idx, self.channels_last))
            torch.cuda.current_stream(self.device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            self.optimizer.zero_grad(set_to_none=True)
            with torch.cuda.graph(graph):
                loss = self._loss(*data.batch(self._graph_idx, self.channels_last))
                loss.backward()
                self.optimizer.step()
                self._graph_loss_sum.add_(loss.detach().float(), alpha=batch_size)
        finally:
            torch.backends.cudnn.benchmark = benchmark
            with torch.no_grad():
                for tensor, value in zip(self.model.state_dict().values(), saved, strict=True):
                    tensor.copy_(value)
        self._graph, self._graph_key = graph, key

    def train_epoch(
        self,
        data: TensorData,
        batch_size: int,
        generator: torch.Generator | None = None,
        max_batches: int | None = None,
        indices: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """One shuffled pass over ``data``; returns the mean loss as a device tensor (no sync).

        ``indices``: the images to visit instead of a shuffle (this process's share under DDP).
        """
        self.train_model.train()
        if self.uses_graphs and indices is None:
            return self._train_epoch_graphed(data, batch_size, generator, max_batches)
        total = torch.zeros((), device=self.device)
        seen = 0
        batches = data.batches(
            batch_size,
            shuffle=True,
            generator=generator,
            channels_last=self.channels_last,
            max_batches=max_batches,
            indices=indices,
        )
        for images, targets in batches:
            total += self._step(images, targets) * len(targets)
            seen += len(targets)
        return total / seen

    def _train_epoch_graphed(
        self,
        data: TensorData,
        batch_size: int,
        generator: torch.Generator | None,
        max_batches: int | None,
    ) -> torch.Tensor:
        key = (data.images.data_ptr(), batch_size, self.dtype, self.channels_last)
        if self._graph is None or self._graph_key != key:
            self._capture(data, batch_size, key)
        assert self._graph is not None
        self._graph_loss_sum.zero_()
        tail = torch.zeros((), device=self.device)
        seen = 0
        batches = data.batch_indices(
            batch_size, shuffle=True, generator=generator, max_batches=max_batches
        )
        for idx in batches:
            if len(idx) == batch_size:
                self._graph_idx.copy_(idx)
                self._graph.replay()
            else:  # the last, smaller batch: one eager step with the same weights
                tail += self._step(*data.batch(idx, self.channels_last)) * len(idx)
            seen += len(idx)
        return (self._graph_loss_sum + tail) / seen

    @torch.no_grad()
    def evaluate(self, data: TensorData, batch_size: int = 1000) -> tuple[float, float]:
        """``(mean loss, accuracy)`` on ``data``, in fp32 so it matches the plain evaluation."""
        self.model.eval()
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device, dtype=torch.long)
        for images, targets in data.batches(batch_size, channels_last=self.channels_last):
            logits = self.model(images).float()
            loss_sum += nn.functional.cross_entropy(logits, targets, reduction="sum")
            correct += (logits.argmax(1) == targets).sum()
        return (loss_sum / len(data)).item(), (correct / len(data)).item()


def fastest_dtype(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    data: TensorData,
    batch_size: int,
) -> tuple[torch.dtype | None, dict[str, float]]:
    """The precision the fast loop should train ``model`` in on ``device``: mixed precision
    (``precision.mixed_dtype``) where ``precision.speedup`` finds that it ``precision.pays``,
    else None (fp32); and the probe's times.

    Each timed block is a few training steps of the fast loop on ``data``, each precision on its
    own copy of ``model`` and ``optimizer``, which are left as they were: 10 steps a block on a
    CPU (about 0.2 s), 200 on a GPU, where a step takes well under a millisecond."""
    mixed = precision.mixed_dtype(device, fp16=True)
    if mixed is None:
        return None, {}
    steps = 10 if device.type == "cpu" else 200
    generator = torch.Generator().manual_seed(0)  # leave the global random state alone

    def block(dtype: torch.dtype | None) -> Callable[[], object]:
        copied = copy.deepcopy(model)
        trainer = FastTrainer(
            copied, type(optimizer)(copied.parameters(), **optimizer.defaults), device, dtype
        )
        return lambda: trainer.train_epoch(data, batch_size, generator, max_batches=steps)

    fp32, fast = precision.speedup(block(None), block(mixed), device, repeats=2)
    timings = {"fp32": fp32, str(mixed).replace("torch.", ""): fast}
    return (mixed if precision.pays(fp32, fast, device) else None), timings
