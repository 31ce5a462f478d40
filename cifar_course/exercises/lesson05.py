"""Exercises for lesson 05, inference on your own image: any photo into the network's input,
logits into a class name and a probability, and a classifier that is ready for one image."""

from __future__ import annotations

import copy
from typing import Any

import torch
from PIL import Image
from torch import nn

from ..data import CLASSES
from ..inference import TO_INPUT, example_photos
from . import Exercise, NotYet, ____, as_number, run_learner, run_watched, shape_text, short

__all__ = ["____", "q1", "q2", "q3", "CLASSES", "make_model"]


def _photos() -> list[tuple[str, Image.Image]]:
    """The lesson's photographs in the modes a learner's files come in."""
    photos = example_photos()
    with Image.open(photos["cat"]) as cat, Image.open(photos["dog"]) as dog:
        cat, dog = cat.convert("RGB"), dog.convert("RGB")
    rgba = cat.convert("RGBA")
    rgba.putalpha(200)
    return [
        ("an RGB photo (JPEG)", dog),
        ("an RGBA photo (a PNG with transparency)", rgba),
        ("a grayscale photo (mode L)", dog.convert("L")),
        ("a palette image (mode P, a GIF)", cat.convert("P")),
    ]


def _check_preprocess(preprocess: Any) -> str:
    for what, image in _photos():
        got = run_learner("preprocess", preprocess, image.copy())
        if not isinstance(got, torch.Tensor):
            raise NotYet(f"for {what} preprocess returned {type(got).__name__}; return a tensor.")
        expected = TO_INPUT(image.convert("RGB")).unsqueeze(0)
        if got.shape != expected.shape:
            advice = ""
            if got.dim() == 3:
                advice = " Add the batch dimension with .unsqueeze(0)."
            elif got.dim() == 4 and got.shape[-1] == 3 and got.shape[1] != 3:
                advice = " The channels go first, then height and width: ToTensor() does that."
            elif got.dim() == 4 and got.shape[1] != 3:
                advice = " Convert the image to RGB first: image.convert('RGB')."
            elif got.dim() == 4 and got.shape[2:] != (32, 32):
                advice = (
                    " Resize((32, 32)) squashes to 32x32; Resize(32) only sets the shorter side."
                )
            raise NotYet(
                f"for {what} your tensor has shape {shape_text(got.shape)}; expected "
                f"{shape_text(expected.shape)}.{advice}"
            )
        if got.dtype != torch.float32:
            raise NotYet(
                f"your tensor holds {got.dtype}; the network's weights are float32, and so must "
                "its input be: ToTensor() gives float32."
            )
        low, high = got.min().item(), got.max().item()
        if high > 10:
            raise NotYet(
                f"your values go up to {high:.0f}; the network was trained on ToTensor's 0..1, "
                "not 0..255."
            )
        if low < -0.05 or high > 1.5:
            raise NotYet(
                f"your values run from {low:.2f} to {high:.2f}; the network was trained on "
                "ToTensor's 0..1, without Normalize: leave Normalize out."
            )
        if not torch.allclose(got.float(), expected, atol=0.02):
            difference = (got.float() - expected).abs().max().item()
            if image.mode == "RGBA":
                plain = TO_INPUT(image.convert("RGB")).unsqueeze(0)
                mine = run_learner("preprocess", preprocess, image.convert("RGB"))
                if isinstance(mine, torch.Tensor) and torch.allclose(
                    mine.float(), plain, atol=0.02
                ):
                    raise NotYet(
                        f"for {what} your values differ from the lesson's by up to "
                        f"{difference:.2f}, though they match for the same photo without "
                        "transparency: image.convert('RGB') drops the alpha channel and keeps "
                        "the colours; do not blend the image onto a background."
                    )
            raise NotYet(
                f"for {what} your values differ from the lesson's preprocessing by up to "
                f"{difference:.2f}: use transforms.Resize((32, 32)) (bilinear, as in lesson 05; "
                "PIL's own resize filters differently) then ToTensor(), nothing else."
            )
    return "RGB, RGBA, grayscale and palette images all become a [1, 3, 32, 32] batch in 0..1."


def _check_top_class(top_class: Any) -> str:
    generator = torch.Generator().manual_seed(7)
    other_names = [f"class {i}" for i in range(10)]  # the names come from the argument
    for names in (list(CLASSES), list(CLASSES), list(CLASSES), other_names):
        logits = torch.randn(1, 10, generator=generator) * 2
        probabilities = logits.softmax(dim=1)[0]
        index = int(probabilities.argmax())
        got = run_learner("top_class", top_class, logits.clone(), list(names))
        if not isinstance(got, tuple | list) or len(got) != 2:
            raise NotYet(f"top_class returned {short(got)}; return (class name, probability).")
        name, probability = got
        if names is other_names and name in CLASSES:
            raise NotYet(
                f"given the class names {other_names[0]!r} ... {other_names[-1]!r} you answer "
                f"{name!r}: take the name from class_names, the argument, not from CLASSES."
            )
        if name != names[index]:
            hint = (
                " (index 0 every time: argmax over dim 0 of a [1, 10] tensor)"
                if name == names[0]
                else ""
            )
            raise NotYet(
                f"you chose {name!r}{hint}; the largest logit is {names[index]!r}, index {index}."
            )
        value = as_number(probability, "the probability", "a number")
        if abs(value - float(logits[0, index])) < 1e-5:
            raise NotYet(
                f"you give {value:.3f} for {name!r}: that is its logit. softmax turns logits into "
                f"probabilities: {probabilities[index]:.3f}."
            )
        if abs(value - 1.0) < 1e-6:
            raise NotYet(
                f"you give {name!r} a probability of 1.0: the softmax ran over dim 0, which holds "
                "one image. Take it over the classes, dim=1."
            )
        if abs(value - float(probabilities[index])) > 1e-5:
            raise NotYet(
                f"you give {name!r} a probability of {value:.4f}; softmax gives "
                f"{probabilities[index]:.4f}."
            )
    return (
        "the right class name with its softmax probability, on four sets of logits and two "
        "lists of names."
    )


def make_model() -> nn.Module:
    """A small network, left in training mode, whose answer depends on every pixel: BatchNorm
    over the colours, then one linear layer over the 32x32 image. (A randomly initialised deep
    network gives almost the same answer for any input, so it could not tell a ``classify``
    that ignores the image from one that reads it.)"""
    torch.manual_seed(0)
    model = nn.Sequential(nn.BatchNorm2d(3), nn.Flatten(), nn.Linear(3 * 32 * 32, 10))
    with torch.no_grad():
        batch_norm = model[0]
        batch_norm.running_mean.fill_(0.45)  # statistics unlike one photo's own
        batch_norm.running_var.fill_(0.06)
    return model.train()


def _check_classify(classify: Any, preprocess: Any = None) -> str:
    if preprocess is None:
        raise NotYet("pass your preprocess too: q3.check(classify, preprocess).")
    try:
        _check_preprocess(preprocess)
    except NotYet as exc:
        raise NotYet(f"first make preprocess right (exercise 1): {exc}") from None
    photos = example_photos()
    for name in ("ship", "bird", "cat", "deer"):  # RGB, RGB, RGBA, grayscale
        with Image.open(photos[name]) as image:
            image = image.copy()
        model = make_model()
        got, seen = run_watched(model, "classify", classify, model, image, preprocess)
        if not seen:
            raise NotYet("classify never ran the model.")
        if any(training for training, _ in seen):
            raise NotYet(
                "the model ran in training mode, so BatchNorm normalised the one image with its "
                "own statistics: call model.eval() first, which switches every layer inside it "
                "too."
            )
        if any(grad for _, grad in seen):
            raise NotYet("autograd recorded the forward pass: wrap it in `with torch.no_grad():`.")
        reference = copy.deepcopy(model).eval()
        with torch.no_grad():
            probabilities = reference(preprocess(image.copy())).softmax(1)[0]
        index = int(probabilities.argmax())
        if not isinstance(got, tuple | list) or len(got) != 2:
            raise NotYet(f"classify returned {short(got)}; return (class name, probability).")
        label, probability = got
        value = as_number(probability, "classify", "the probability as a number")
        if label != CLASSES[index] or abs(value - float(probabilities[index])) > 1e-4:
            raise NotYet(
                f"for the {name} photo you return ({short(label)}, {value:.4f}); this network "
                f"in eval mode, given preprocess(image), gives ({CLASSES[index]!r}, "
                f"{probabilities[index]:.4f}). Does classify run the model on preprocess(image), "
                "and use top_class?"
            )
    return (
        "eval mode, no gradients, your preprocess and your top_class: the right answer for four "
        "photos, one image in, one answer out."
    )


q1 = Exercise(
    "q1: any image into the network's input",
    _check_preprocess,
    hint="""
        Whatever the mode, the network wants three colour channels, 32x32 pixels, floats in
        0..1, and a batch dimension in front. Pillow converts between modes; lesson 05's
        transforms do the rest.
    """,
    solution="""
        to_input = transforms.Compose([transforms.Resize((32, 32)), transforms.ToTensor()])


        def preprocess(image):
            return to_input(image.convert("RGB")).unsqueeze(0)
    """,
)

q2 = Exercise(
    "q2: from logits to a class name",
    _check_top_class,
    hint="""
        logits has shape [1, 10]: one image, ten classes. Which function turns logits into
        probabilities, and over which of the two dimensions? The index of the largest one
        names the class.
    """,
    solution="""
        def top_class(logits, class_names):
            probabilities = logits.softmax(dim=1)[0]
            index = int(probabilities.argmax())
            return class_names[index], probabilities[index].item()
    """,
)

q3 = Exercise(
    "q3: classify one image",
    _check_classify,
    hint="""
        Three lines of lesson 05 matter here: the mode a network must be in for inference, the
        block that stops autograd recording, and reusing your preprocess and top_class.
    """,
    solution="""
        def classify(model, image, preprocess):
            model.eval()
            with torch.no_grad():
                logits = model(preprocess(image))
            return top_class(logits, CLASSES)
    """,
)
