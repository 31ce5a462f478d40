"""The lesson net, written layer by layer and as ``nn.Sequential``.

Both classes live in this importable module on purpose: a whole-model pickle (save method 1)
stores only the class's import path, so it loads in any process that can import ``cifar_course``.
"""

from __future__ import annotations

import torch
from torch import nn

NUM_CLASSES = 10


class LessonNet(nn.Module):
    """Conv-Pool x3, Flatten, Linear(1024, 64), Linear(64, 10), each layer its own attribute."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, kernel_size=5, padding=2)
        self.maxpool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(32, 32, kernel_size=5, padding=2)
        self.maxpool2 = nn.MaxPool2d(2)
        self.conv3 = nn.Conv2d(32, 64, kernel_size=5, padding=2)
        self.maxpool3 = nn.MaxPool2d(2)
        self.flatten = nn.Flatten()
        self.linear1 = nn.Linear(1024, 64)
        self.linear2 = nn.Linear(64, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool1(self.conv1(x))
        x = self.maxpool2(self.conv2(x))
        x = self.maxpool3(self.conv3(x))
        x = self.flatten(x)
        return self.linear2(self.linear1(x))


class LessonNetSequential(nn.Module):
    """The same network as one ``nn.Sequential`` in ``self.model``."""

    def __init__(self) -> None:
        super().__init__()
        self.model = nn.Sequential(
            nn.Conv2d(3, 32, 5, padding=2),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 32, 5, padding=2),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 5, padding=2),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(64 * 4 * 4, 64),
            nn.Linear(64, NUM_CLASSES),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


MEAN = (0.49139968, 0.48215841, 0.44653091)  # CIFAR-10 training-set statistics
STD = (0.24703223, 0.24348513, 0.26158784)


def conv_bn(c_in: int, c_out: int, pool: bool = False) -> list[nn.Module]:
    """3x3 convolution, optional 2x2 max-pool, batch norm, GELU."""
    layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)]
    if pool:
        layers.append(nn.MaxPool2d(2))
    return [*layers, nn.BatchNorm2d(c_out), nn.GELU()]


class ModernNet(nn.Module):
    """A small VGG-style network: seven 3x3 convolutions, two each at 32, 16 and 8 px, one at 4."""

    def __init__(self, widths: tuple[int, int, int] = (32, 128, 128)) -> None:
        super().__init__()
        w1, w2, w3 = widths
        self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(STD).view(1, 3, 1, 1))
        self.layers = nn.Sequential(
            *conv_bn(3, w1),
            *conv_bn(w1, w1, pool=True),
            *conv_bn(w1, w1),
            *conv_bn(w1, w2, pool=True),
            *conv_bn(w2, w2),
            *conv_bn(w2, w3, pool=True),
            *conv_bn(w3, w3),
            nn.AdaptiveMaxPool2d(1),
            nn.Flatten(),
            nn.Linear(w3, 10, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: images in [0, 1], as the lesson net takes them."""
        # Scaling the logits down keeps the max-pooled features from making them explode early.
        return self.layers((x - self.mean) / self.std) / 8


BN_MOMENTUM = 0.4  # PyTorch's convention: weight of the newest batch in the running averages


def batch_norm(channels: int) -> nn.BatchNorm2d:
    """BatchNorm with a learned shift but no learned scale: the scale stays 1.

    The speed-runs found the scale does not help here: the next convolution can scale its own
    weights, so a per-channel scale mostly gives the optimizer a second way of doing one thing.
    """
    bn = nn.BatchNorm2d(channels, momentum=BN_MOMENTUM, eps=1e-12)
    bn.weight.requires_grad_(False)
    return bn


class ConvGroup(nn.Sequential):
    """conv 3x3, max-pool 2x2, BatchNorm, GELU, conv 3x3, BatchNorm, GELU."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__(
            nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
            nn.MaxPool2d(2),
            batch_norm(c_out),
            nn.GELU(),
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
            batch_norm(c_out),
            nn.GELU(),
        )


class SpeedNet(nn.Module):
    """Lesson 08's network: a frozen whitening layer, three ``ConvGroup`` s (31, 15, 7, 3 px) and
    a linear head; airbench94's shape and widths (see ``cifar_course.recipes.speedrun``)."""

    widths: tuple[int, int, int] = (64, 256, 256)
    whiten_kernel = 2

    def __init__(self) -> None:
        super().__init__()
        w1, w2, w3 = self.widths
        patch = 3 * self.whiten_kernel * self.whiten_kernel
        self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(STD).view(1, 3, 1, 1))
        # Each whitening filter comes with its negative: GELU then keeps both signs of it.
        self.whiten = nn.Conv2d(3, 2 * patch, self.whiten_kernel, bias=True)
        self.whiten.weight.requires_grad_(False)
        self.layers = nn.Sequential(
            nn.GELU(),
            ConvGroup(2 * patch, w1),
            ConvGroup(w1, w2),
            ConvGroup(w2, w3),
            nn.AdaptiveMaxPool2d(1),
            nn.Flatten(),
            nn.Linear(w3, 10, bias=False),
        )

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] to CIFAR-10's zero mean and unit standard deviation per channel."""
        return (x - self.mean) / self.std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: images in [0, 1], as the lesson net takes them."""
        # The whitening layer runs in fp32 even under bf16 autocast: its filters for the smallest
        # eigenvalues are large and nearly cancel, which bf16's 8 bits of mantissa would blur.
        with torch.autocast(x.device.type, enabled=False):
            x = self.whiten(self.normalize(x.float()))
        # The max-pooled features are large; scaling the logits keeps the first steps stable.
        return self.layers(x) / 9


class SpeedNetSmall(SpeedNet):
    """``SpeedNet`` at half the width, for CPUs: about a quarter of the multiply-adds."""

    widths = (32, 128, 128)


class SpeedNetMedium(SpeedNet):
    """``SpeedNet`` at three quarters of the width (48/192/192), between the two: one of the
    networks ``--budget`` chooses from."""

    widths = (48, 192, 192)


ARCHITECTURES: dict[str, type[nn.Module]] = {
    "lesson_net": LessonNet,
    "lesson_net_sequential": LessonNetSequential,
    "modern_net": ModernNet,
    "speed_net": SpeedNet,
    "speed_net_medium": SpeedNetMedium,
    "speed_net_small": SpeedNetSmall,
}


def build_model(arch: str = "lesson_net") -> nn.Module:
    """Build a fresh, randomly initialised model by its architecture name."""
    try:
        return ARCHITECTURES[arch]()
    except KeyError:
        known = ", ".join(sorted(ARCHITECTURES))
        raise ValueError(f"Unknown architecture '{arch}'; known ones: {known}.") from None


def arch_name(model: nn.Module) -> str:
    """The architecture name under which ``build_model`` rebuilds ``model``."""
    for name, cls in ARCHITECTURES.items():
        if type(model) is cls:
            return name
    raise ValueError(f"{type(model).__name__} is not one of the course's architectures.")


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters (145,578 for the lesson net)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def copy_weights(source: nn.Module, target: nn.Module) -> nn.Module:
    """Copy weights between two forms of one network, matching parameters by order and shape."""
    src, dst = list(source.state_dict().values()), list(target.state_dict().keys())
    shapes_src = [t.shape for t in src]
    shapes_dst = [t.shape for t in target.state_dict().values()]
    if shapes_src != shapes_dst:
        raise ValueError("The two models do not have the same parameter shapes in the same order.")
    target.load_state_dict(dict(zip(dst, src, strict=True)))
    return target
