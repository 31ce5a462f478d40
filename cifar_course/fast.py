"""The fast training path: the lesson's exact recipe, several times faster.

Same network, loss, optimizer, learning rate, batch size and epochs as the lecture; only how the
work is fed to the hardware changes:

- the whole data set sits in memory (on the GPU when there is one) as one uint8 tensor and is
  shuffled per epoch by indexing, with no PIL and no per-sample Python (``TensorData``);
- ``channels_last`` memory layout, which the CPU's and GPU's convolution kernels prefer;
- mixed precision (bf16 autocast, or fp16 with a gradient scaler on older GPUs), kept only where
  a short probe shows it is faster: on the course's 2-core Xeon (AVX-512 BF16, no AMX) oneDNN's
  bf16 convolutions measured half the speed of fp32, so there it stays off. The weights and the
  optimizer always stay in fp32;
- no ``.item()`` per step, so the host never waits for the device inside an epoch;
- on a Linux CPU, ``malloc`` keeps freed memory for reuse instead of returning it to the kernel
  (``keep_freed_memory``), so large activations do not cost fresh, zeroed pages every step.
"""

from __future__ import annotations

import copy
import time

import torch
from torch import nn

from .data import TensorData
from .device import keep_freed_memory, synchronize


class FastTrainer:
    """Runs epochs of the seed recipe on ``TensorData`` with the speed levers switched on."""

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        device: torch.device,
        amp: bool | None = None,
        channels_last: bool = True,
        probe_data: TensorData | None = None,
        batch_size: int = 64,
    ) -> None:
        """``amp``: True forces mixed precision, False turns it off, None measures which is faster
        on ``probe_data`` (a few steps on a throwaway copy of the model)."""
        self.device = device
        self.channels_last = channels_last
        if device.type == "cpu":
            keep_freed_memory()
        memory_format = torch.channels_last if channels_last else torch.preserve_format
        self.model = model.to(device, memory_format=memory_format)
        self.optimizer = optimizer
        self.loss_fn = nn.CrossEntropyLoss()
        self.dtype: torch.dtype | None = None
        self.scaler = torch.amp.GradScaler(device.type, enabled=False)
        self.probe: dict[str, float] = {}
        if amp or (amp is None and probe_data is not None):
            self.dtype = self.dtype_for(device)
        if amp is None and probe_data is not None and self.dtype is not None:
            self.dtype = self._fastest_dtype(probe_data, batch_size)
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.dtype == torch.float16)

    def _fastest_dtype(
        self, data: TensorData, batch_size: int, steps: int = 15
    ) -> torch.dtype | None:
        """Time a few training steps in fp32 and in mixed precision on copies; return the faster."""
        chosen, original = self.dtype, (self.model, self.optimizer, self.scaler)
        for dtype in (None, chosen):
            self.model = copy.deepcopy(original[0])
            self.optimizer = type(original[1])(self.model.parameters(), **original[1].defaults)
            self.dtype = dtype
            self.scaler = torch.amp.GradScaler(self.device.type, enabled=dtype == torch.float16)
            order = torch.Generator().manual_seed(0)  # leave the global RNG alone
            self.train_epoch(data, batch_size, order, max_batches=3)  # warm-up
            synchronize(self.device)
            began = time.perf_counter()
            self.train_epoch(data, batch_size, order, max_batches=steps)
            synchronize(self.device)
            self.probe[str(dtype or "fp32").replace("torch.", "")] = time.perf_counter() - began
        self.model, self.optimizer, self.scaler = original
        fp32, mixed = self.probe.values()
        return chosen if mixed < fp32 else None

    @staticmethod
    def dtype_for(device: torch.device) -> torch.dtype | None:
        """The mixed-precision type worth using on ``device``, or None where it would not pay."""
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        if device.type == "cpu":
            # bf16 pays only with native support (AVX-512 BF16 or AMX); emulated bf16 is slower.
            return torch.bfloat16 if torch.ops.mkldnn._is_mkldnn_bf16_supported() else None
        return None

    def _autocast(self) -> torch.autocast:
        return torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype is not None)

    def train_epoch(
        self,
        data: TensorData,
        batch_size: int,
        generator: torch.Generator | None = None,
        max_batches: int | None = None,
    ) -> torch.Tensor:
        """One shuffled pass over ``data``; returns the mean loss as a device tensor (no sync)."""
        self.model.train()
        total = torch.zeros((), device=self.device)
        seen = 0
        batches = data.batches(batch_size, True, generator, self.channels_last, max_batches)
        for images, targets in batches:
            with self._autocast():
                loss = self.loss_fn(self.model(images), targets)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            total += loss.detach().float() * len(targets)
            seen += len(targets)
        return total / seen

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
