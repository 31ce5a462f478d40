"""Classifying any image file: open it, make it RGB, resize to 32x32, eval, no_grad, softmax."""

from __future__ import annotations

import warnings
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import nn
from torchvision import transforms

from .data import CLASSES
from .errors import CourseError

# The lesson's preprocessing: squash to 32x32 (as the lecture does), then ToTensor's [0, 1] floats.
TO_INPUT = transforms.Compose([transforms.Resize((32, 32)), transforms.ToTensor()])


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB, keeping 16-bit and float images' brightness.

    16-bit modes scale 0..65535 to 0..255. A 32-bit ``I`` image is read as 8-bit when all its
    values fit, else as 16-bit; an ``F`` image as 0..1 when all its values fit, else as 0..255.
    """
    if image.mode.startswith("I;16") or image.mode in ("I", "F"):
        values = np.asarray(image, dtype=np.float64)
        if image.mode.startswith("I;16"):
            scaled = values / 257.0
        elif image.mode == "I":
            scaled = values if values.max() <= 255 else values / 257.0
        else:
            scaled = values * 255.0 if values.max() <= 1.0 else values
        image = Image.fromarray(np.clip(scaled, 0, 255).round().astype(np.uint8), mode="L")
    elif image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    return image.convert("RGB")


def load_image(path: str | Path) -> Image.Image:
    """Open an image file as upright RGB (EXIF rotation applied; first frame of an animation)."""
    path = Path(path)
    try:  # the file system's answers first: a name too long, a file nobody may read, ...
        if not path.exists():
            raise CourseError(f"'{path}': no such file. Check the path.")
        if path.is_dir():
            raise CourseError(f"'{path}' is a folder, not an image file.")
        if not path.is_file():
            raise CourseError(f"'{path}' is not a regular file, so it is no image.")
        if path.stat().st_size == 0:
            raise CourseError(f"'{path}' is empty (0 bytes), not an image.")
    except OSError as exc:
        raise CourseError(
            f"'{path}' cannot be read ({exc.strerror or exc}); check the path and its permissions."
        ) from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                image.seek(0)
                image.load()
                upright = ImageOps.exif_transpose(image)
                return to_rgb(upright if upright is not None else image)
    except UnidentifiedImageError as exc:
        raise CourseError(
            f"'{path}' is not an image Pillow can read (JPEG, PNG, GIF, ...); check the path, "
            "or save the picture again as JPEG or PNG."
        ) from exc
    except Image.DecompressionBombError as exc:
        raise CourseError(
            f"'{path}' is too large to open safely ({exc}). Resize it first."
        ) from exc
    except OSError as exc:
        if exc.errno is not None:  # the operating system's refusal (EACCES, EIO, ...), not Pillow's
            raise CourseError(
                f"'{path}' cannot be read ({exc.strerror or exc}); check the path and its "
                "permissions."
            ) from None
        raise CourseError(
            f"'{path}' is a damaged or truncated image ({exc}); copy or download it again."
        ) from exc
    except (SyntaxError, ValueError) as exc:
        raise CourseError(
            f"'{path}' is a damaged or truncated image ({exc}); copy or download it again."
        ) from exc


def image_to_tensor(image: str | Path | Image.Image) -> torch.Tensor:
    """Turn an image file or PIL image into the model input: float ``[1, 3, 32, 32]`` in [0, 1]."""
    if not isinstance(image, Image.Image):
        image = load_image(image)
    return TO_INPUT(to_rgb(image)).unsqueeze(0)


@torch.no_grad()
def class_probabilities(model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """Softmax probabilities ``[N, 10]`` of ``model`` in eval mode, on the model's device."""
    model.eval()
    device = next(model.parameters()).device
    return torch.softmax(model(inputs.to(device)).float(), dim=1).cpu()


def predict(
    model: nn.Module, image: str | Path | Image.Image, k: int = 3
) -> list[tuple[str, float]]:
    """The top-``k`` ``(class name, probability)`` pairs for one image, most likely first."""
    probs = class_probabilities(model, image_to_tensor(image))[0]
    top = probs.topk(min(k, len(CLASSES)))
    return [(CLASSES[i], p) for p, i in zip(top.values.tolist(), top.indices.tolist(), strict=True)]


def example_photos() -> dict[str, Path]:
    """Lesson 05's photographs, shipped inside the package: ``{class name: path}``.

    They are package data (sources and licences in ``cifar_course/images/SOURCES.md``), so a
    notebook finds them wherever the package is installed, on Colab too, without a copy of the
    repository.
    """
    folder = resources.files("cifar_course") / "images"
    if not isinstance(folder, Path):  # installed inside a zip file: no real paths to give out
        raise CourseError("cifar_course is installed as a zip file; install it as a folder.")
    photos = sorted(p for p in folder.iterdir() if p.suffix in (".jpg", ".png"))
    return {p.stem: p for p in photos}
