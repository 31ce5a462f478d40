import re
from pathlib import Path

import pytest
import torch

from cifar_course import data
from cifar_course.augment import augment, triangular_lr
from cifar_course.checkpoints import load_model
from cifar_course.cli import main
from cifar_course.evaluate import evaluate_tta
from cifar_course.models import ModernNet, count_parameters

CAT = Path(__file__).resolve().parents[1] / "cifar_course" / "images" / "cat.png"


def test_modern_net_shapes_and_size():
    model = ModernNet().eval()
    assert model(torch.rand(4, 3, 32, 32)).shape == (4, 10)
    assert count_parameters(model) == 501_024


def test_augment_flips_and_shifts_but_keeps_content():
    images = torch.arange(2 * 3 * 32 * 32, dtype=torch.float32).reshape(2, 3, 32, 32)
    out = augment(images, torch.Generator().manual_seed(0))
    assert out.shape == images.shape
    assert not torch.equal(out, images)
    # every output is a 32x32 window of the (possibly mirrored) input, reflect-padded by 2
    for original, moved in zip(images, out, strict=True):
        found = False
        for candidate in (original, original.flip(2)):
            padded = torch.nn.functional.pad(candidate[None], (2, 2, 2, 2), mode="reflect")[0]
            for dy in range(5):
                for dx in range(5):
                    found |= torch.equal(padded[:, dy : dy + 32, dx : dx + 32], moved)
        assert found


def test_triangular_schedule():
    lrs = [triangular_lr(step, 100, 0.2) for step in range(101)]
    assert lrs[0] == 0 and max(lrs) == 0.2 and lrs[20] == 0.2 and lrs[100] == 0
    assert lrs == sorted(lrs[:21]) + sorted(lrs[21:], reverse=True)
    shifted = [triangular_lr(step, 100, 0.2, start=0.5, end=0.25) for step in range(101)]
    assert shifted[0] == 0.1 and shifted[20] == 0.2 and shifted[100] == pytest.approx(0.05)


def _key(image: torch.Tensor) -> bytes:
    return image.mul(255).round().to(torch.uint8).contiguous().numpy().tobytes()


class LookupModel(torch.nn.Module):
    """Knows the class of each test image only as seen through ``view``; scores 0 otherwise."""

    def __init__(self, test: data.TensorData, view) -> None:
        super().__init__()
        self.known = {}
        for images, targets in test.batches(100):
            for image, target in zip(view(images), targets, strict=True):
                self.known[_key(image)] = int(target)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(len(images), 10)
        for i, image in enumerate(images):
            if (label := self.known.get(_key(image))) is not None:
                logits[i, label] = 1.0
        return logits


def test_tta_looks_at_the_views_it_promises(data_root):
    test = data.TensorData(False, limit=300)
    chance = int((test.labels == 0).sum()) / len(test)  # all-zero scores pick class 0
    mirror = LookupModel(test, lambda x: x.flip(3))
    shifted = LookupModel(
        test, lambda x: torch.nn.functional.pad(x, (1, 1, 1, 1), mode="reflect")[:, :, 2:, 2:]
    )
    assert evaluate_tta(LookupModel(test, lambda x: x), test) == {
        "plain": 1.0,
        "flip": 1.0,
        "flip_shift": 1.0,
    }
    assert evaluate_tta(mirror, test, batch_size=128) == {
        "plain": chance,
        "flip": 1.0,
        "flip_shift": 1.0,
    }
    assert evaluate_tta(shifted, test) == {"plain": chance, "flip": chance, "flip_shift": 1.0}
    assert evaluate_tta(mirror, test, tta=False) == {"plain": chance}


@pytest.mark.slow
def test_modern_recipe_from_the_command_line(data_root, tmp_path, capsys):
    out = tmp_path / "ck"
    args = [
        "train",
        "--recipe",
        "modern",
        "--epochs",
        "4",
        "--batch-size",
        "128",
        "--out",
        str(out),
        "--logdir",
        str(tmp_path / "tb"),
    ]
    assert main(args) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1].startswith("final test accuracy:")
    assert "with flip-and-shift TTA" in lines[-1] and "with flip TTA" in lines[-1]
    accuracy = float(lines[-1].split()[3].rstrip("%")) / 100
    assert accuracy > 0.25  # 4 short epochs on 2,000 images; chance is 0.10
    checkpoint = out / "modern_net_epoch04.pt"
    assert isinstance(load_model(checkpoint), ModernNet)
    evaluate = ["evaluate", "--checkpoint", str(checkpoint), "--tta", "--batch-size", "1000"]
    assert main(evaluate) == 0
    evaluated = capsys.readouterr().out
    assert "test accuracy of" in evaluated and "on 1,000 images" in evaluated
    # the saved weights give back the accuracies that training printed: plain, flip, flip-and-shift
    # (to one image in 1,000: the reloaded model may use other convolution kernels, which round
    # differently)
    trained = [float(x) for x in re.findall(r"(\d+\.\d+)%", lines[-1])][::-1]
    found = [float(x) for x in re.findall(r"(\d+\.\d+)%", evaluated.replace(str(tmp_path), ""))]
    reloaded = [found[0], *found[-2:]]
    assert all(abs(a - b) <= 0.1 for a, b in zip(trained, reloaded, strict=True))
    assert main(["predict", "--checkpoint", str(checkpoint), str(CAT)]) == 0
    capsys.readouterr()
    resume = [
        "train",
        "--epochs",
        "5",
        "--resume",
        str(checkpoint),
        "--out",
        str(tmp_path / "o"),
        "--logdir",
        str(tmp_path / "l"),
    ]
    assert main(resume) == 1  # the lecture recipe cannot continue a modern_net checkpoint
    assert "saved from modern_net, not lesson_net" in capsys.readouterr().err
    assert main([*resume, "--recipe", "modern"]) == 0
