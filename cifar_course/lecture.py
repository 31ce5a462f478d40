"""Files made by the lecture's own code, loaded safely: whole `Tudui` pickles and its state_dicts.

The lecture repository's ``train.py`` saves its whole network each epoch,
``torch.save(tudui, "tudui_0.pth")`` (the lecture note has that line commented out), with the
class ``Tudui`` defined in ``model.py`` or in the training script itself (so the pickle names
``model.Tudui`` or ``__main__.Tudui``). Such a file is loaded here with ``weights_only=True``:
PyTorch's allow-list admits only the ``torch.nn`` layers this network uses, and maps the name
``<any module>.Tudui`` to ``LectureModule``, a course class that runs its layers in order. Any other
class or callable the file names is refused, and nothing from the file runs.

The lecture's ``state_dict`` files follow its class's attribute names: ``model.0.weight`` ...
(``self.model = nn.Sequential(...)``, the note's and ``model.py``'s), ``model1.0.weight`` ...
(``nn_seq.py``'s), or one name per layer.
``match_lesson_layout`` accepts any of them when the tensors have the lesson net's shapes in the
lesson net's order.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .models import LessonNet

LECTURE_CLASS = "Tudui"
# The layers of the lecture's network, and the container its later versions put them in.
LECTURE_LAYERS = (nn.Conv2d, nn.MaxPool2d, nn.Flatten, nn.Linear, nn.Sequential)
ACCEPTED_LAYOUTS = (
    "the course's (conv1.weight ... linear2.bias)",
    "the lecture's nn.Sequential in self.model (model.0.weight ... model.8.bias)",
    "the same in self.model1 (model1.0.weight ... model1.8.bias)",
    "one attribute per layer under any names, in the lesson net's order",
)


class LectureModule(nn.Module):
    """Stands in for the lecture's ``Tudui`` when unpickling: runs its layers in definition order.

    That is what ``Tudui.forward`` does, whether the layers sit in one ``nn.Sequential`` or in one
    attribute each.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.children():
            x = layer(x)
        return x


def lecture_class_names(path: str | Path) -> list[str]:
    """The ``module.Tudui`` names a checkpoint refers to, read without unpickling anything."""
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # not a zip checkpoint, or damaged: the normal load reports it
        return []
    return [name for name in names if name.rpartition(".")[2] == LECTURE_CLASS]


def foreign_globals(path: str | Path) -> list[str]:
    """What else a file naming ``Tudui`` refers to, beyond the lecture's layers: refused things."""
    layers = {f"{cls.__module__}.{cls.__qualname__}" for cls in LECTURE_LAYERS}
    names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    return [n for n in names if n not in layers and n.rpartition(".")[2] != LECTURE_CLASS]


def load_lecture_model(path: str | Path, map_location: Any = "cpu") -> nn.Module | None:
    """Load a whole-model pickle of the lecture's ``Tudui`` safely; None if the file names none.

    Raises ``pickle.UnpicklingError`` (from ``torch.load``) when the file names anything beyond
    ``Tudui`` and the lecture's layers.
    """
    names = lecture_class_names(path)
    if not names:
        return None
    allowed = [*LECTURE_LAYERS, *((LectureModule, name) for name in names)]
    with torch.serialization.safe_globals(allowed):
        model = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(model, LectureModule):
        return None
    return model


def match_lesson_layout(state: dict[str, Any]) -> str | None:
    """Which layout a state_dict with the lesson net's tensors uses; None if it is not one.

    The tensors must have the lesson net's shapes in the lesson net's order, as weight-bias pairs.
    """
    keys = list(state)
    reference = LessonNet().state_dict()
    shapes = [tuple(t.shape) for t in reference.values()]
    if len(keys) != len(shapes) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        return None
    if [tuple(v.shape) for v in state.values()] != shapes:
        return None
    if [k.rpartition(".")[2] for k in keys] != ["weight", "bias"] * (len(shapes) // 2):
        return None
    if keys == list(reference):
        return ACCEPTED_LAYOUTS[0]
    sequential = re.fullmatch(r"(\w+)\.0\.weight", keys[0])
    if sequential and all(k.startswith(sequential.group(1) + ".") for k in keys):
        name = sequential.group(1)
        return f"the lecture's nn.Sequential in self.{name} ({keys[0]} ... {keys[-1]})"
    layers = ", ".join(dict.fromkeys(k.rpartition(".")[0] for k in keys))
    return f"one attribute per layer ({layers})"


def to_lesson_net(state: dict[str, Any]) -> LessonNet:
    """A ``LessonNet`` holding the tensors of ``state`` (any accepted layout), matched by order."""
    net = LessonNet()
    net.load_state_dict(dict(zip(net.state_dict(), state.values(), strict=True)))
    return net
