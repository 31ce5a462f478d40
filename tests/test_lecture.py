"""Files made by the lecture's own code work with the course, and a hostile one does not.

Every lecture-style file here is made by the lecture's kind of code, run in a fresh Python process
in a temporary folder: a ``model.py`` with a ``Tudui`` class saved whole, a training script that
saves ``__main__.Tudui``, state_dicts in each of the lecture's layouts, a file whose tensors are
tagged ``cuda:0``, and a hostile file.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from cifar_course import CourseError, LessonNet
from cifar_course.checkpoints import atomic_save, load_model, save_checkpoint
from cifar_course.cli import main

SEQUENTIAL = """
import torch
from torch import nn


class Tudui(nn.Module):
    def __init__(self):
        super().__init__()
        self.{attr} = nn.Sequential(
            nn.Conv2d(3, 32, 5, 1, 2), nn.MaxPool2d(2),
            nn.Conv2d(32, 32, 5, 1, 2), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 5, 1, 2), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(64 * 4 * 4, 64), nn.Linear(64, 10),
        )

    def forward(self, x):
        return self.{attr}(x)
"""

LAYER_BY_LAYER = """
import torch
from torch import nn


class Tudui(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv_a = nn.Conv2d(3, 32, 5, padding=2)
        self.pool_a = nn.MaxPool2d(2)
        self.conv_b = nn.Conv2d(32, 32, 5, padding=2)
        self.pool_b = nn.MaxPool2d(2)
        self.conv_c = nn.Conv2d(32, 64, 5, padding=2)
        self.pool_c = nn.MaxPool2d(2)
        self.flat = nn.Flatten()
        self.fc_a = nn.Linear(1024, 64)
        self.fc_b = nn.Linear(64, 10)

    def forward(self, x):
        x = self.pool_a(self.conv_a(x))
        x = self.pool_b(self.conv_b(x))
        x = self.pool_c(self.conv_c(x))
        return self.fc_b(self.fc_a(self.flat(x)))
"""

PROBE = "torch.manual_seed(1); probe = torch.rand(4, 3, 32, 32)"


def run_python(folder: Path, code: str) -> None:
    """Run ``code`` as a script in ``folder``, as the lecture's own scripts run."""
    script = folder / "script.py"
    script.write_text(textwrap.dedent(code))
    subprocess.run([sys.executable, str(script)], cwd=folder, check=True, capture_output=True)


def lecture_whole_model(folder: Path, cls: str = SEQUENTIAL.format(attr="model1")) -> Path:
    """``torch.save(tudui, "tudui_0.pth")`` with Tudui in model.py; expected outputs beside it."""
    (folder / "model.py").write_text(cls)
    run_python(
        folder,
        f"""
        import torch
        from model import Tudui
        torch.manual_seed(0)
        tudui = Tudui()
        torch.save(tudui, "tudui_0.pth")
        {PROBE}
        torch.save(tudui(probe), "expected.pt")
        """,
    )
    return folder / "tudui_0.pth"


def expected_outputs(folder: Path) -> torch.Tensor:
    return torch.load(folder / "expected.pt")


def outputs_of(model: torch.nn.Module) -> torch.Tensor:
    torch.manual_seed(1)
    probe = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        return model(probe)


@pytest.mark.parametrize("cls", [SEQUENTIAL.format(attr="model1"), LAYER_BY_LAYER])
def test_whole_lecture_model_loads_without_trust_and_from_any_folder(tmp_path, cls, monkeypatch):
    (tmp_path / "lecture").mkdir()
    path = lecture_whole_model(tmp_path / "lecture", cls)
    monkeypatch.chdir(tmp_path)  # not the folder holding model.py
    notes = []
    model = load_model(path, log=notes.append)
    assert type(model) is LessonNet
    torch.testing.assert_close(outputs_of(model), expected_outputs(path.parent))
    assert notes == [f"'{path}': the lecture's whole Tudui model, loaded safely as the lesson net"]


def test_a_tudui_saved_by_the_training_script_itself_loads(tmp_path):
    run_python(
        tmp_path,
        SEQUENTIAL.format(attr="model")
        + f"""
torch.manual_seed(0)
tudui = Tudui()
torch.save(tudui, "tudui_9.pth")
{PROBE}
torch.save(tudui(probe), "expected.pt")
""",
    )
    assert b"__main__" in (tmp_path / "tudui_9.pth").read_bytes()  # the pickle names __main__.Tudui
    model = load_model(tmp_path / "tudui_9.pth", log=lambda _: None)
    torch.testing.assert_close(outputs_of(model), expected_outputs(tmp_path))


def test_tensors_saved_on_cuda_load_on_a_machine_without_a_gpu(tmp_path, monkeypatch):
    # The lecture's GPU scripts save tensors on cuda:0. Without a GPU here, the test tags the
    # storages "cuda:0" as torch.save does on a GPU, through torch.serialization's own registry.
    (tmp_path / "model.py").write_text(SEQUENTIAL.format(attr="model1"))
    run_python(
        tmp_path,
        f"""
        import torch
        from model import Tudui
        torch.manual_seed(0)
        tudui = Tudui()
        {PROBE}
        torch.save(tudui(probe).detach(), "expected.pt")
        torch.serialization.register_package(0, lambda storage: "cuda:0", lambda s, loc: None)
        torch.save(tudui, "tudui_gpu.pth")
        """,
    )
    assert b"cuda:0" in (tmp_path / "tudui_gpu.pth").read_bytes()
    if not torch.cuda.is_available():
        monkeypatch.syspath_prepend(str(tmp_path))  # model.py importable, as beside the lecture
        with pytest.raises(RuntimeError, match="CUDA"):  # what a plain torch.load does here
            torch.load(tmp_path / "tudui_gpu.pth", weights_only=False)
    model = load_model(tmp_path / "tudui_gpu.pth", log=lambda _: None)
    assert next(model.parameters()).device.type == "cpu"
    torch.testing.assert_close(outputs_of(model), torch.load(tmp_path / "expected.pt"))


def test_hostile_file_naming_tudui_is_refused_and_its_command_never_runs(tmp_path, capsys):
    (tmp_path / "model.py").write_text(SEQUENTIAL.format(attr="model1"))
    run_python(
        tmp_path,
        """
        import os
        import torch
        from model import Tudui

        class Payload:
            def __reduce__(self):
                return (os.system, ("touch PWNED",))

        tudui = Tudui()
        tudui.note = Payload()
        torch.save(tudui, "tudui_0.pth")
        """,
    )
    assert not (tmp_path / "PWNED").exists()
    for command in (
        ["predict", "--checkpoint", str(tmp_path / "tudui_0.pth"), str(tmp_path / "model.py")],
        ["evaluate", "--checkpoint", str(tmp_path / "tudui_0.pth")],
        ["export", str(tmp_path / "tudui_0.pth"), str(tmp_path / "out.pt")],
    ):
        assert main(command) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "names the lecture's class Tudui but also" in err[0], err
        assert "system" in err[0]
    assert not (tmp_path / "PWNED").exists() and not (tmp_path / "out.pt").exists()


def lesson_state(layout: str) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    values = list(LessonNet().state_dict().values())
    if layout in ("model", "model1"):
        names = [f"{layout}.{i}.{w}" for i in (0, 2, 4, 7, 8) for w in ("weight", "bias")]
    else:
        names = [f"{n}.{w}" for n in ("c1", "c2", "c3", "l1", "l2") for w in ("weight", "bias")]
    return dict(zip(names, values, strict=True))


@pytest.mark.parametrize(
    "layout, said",
    [
        ("model", "the lecture's nn.Sequential in self.model (model.0.weight ... model.8.bias)"),
        (
            "model1",
            "the lecture's nn.Sequential in self.model1 (model1.0.weight ... model1.8.bias)",
        ),
        ("layers", "one attribute per layer (c1, c2, c3, l1, l2)"),
    ],
)
def test_state_dicts_in_the_lecture_layouts_load_and_say_which(tmp_path, layout, said):
    path = tmp_path / "tudui_state.pth"
    torch.save(lesson_state(layout), path)
    notes = []
    model = load_model(path, log=notes.append)
    torch.manual_seed(0)
    reference = LessonNet()  # the same initial weights as lesson_state's
    torch.testing.assert_close(outputs_of(model), outputs_of(reference))
    assert notes == [f"'{path}': recognised {said}, loaded as the lesson net"]


def test_a_state_dict_of_another_network_still_fails_and_names_the_accepted_layouts(tmp_path):
    state = lesson_state("model1")
    state["model1.7.weight"] = torch.zeros(32, 1024)  # one layer of another size
    torch.save(state, tmp_path / "other.pth")
    with pytest.raises(CourseError, match="Layouts accepted for the lesson net: the course's"):
        load_model(tmp_path / "other.pth")


@pytest.mark.slow
def test_trusted_whole_model_that_is_no_cifar10_classifier_gives_one_line(tmp_path, capsys):
    import torchvision

    torch.save(torchvision.models.vgg11(weights=None), tmp_path / "vgg.pth")
    image = tmp_path / "dog.png"
    from PIL import Image

    Image.new("RGB", (40, 40)).save(image)
    for command in (
        ["predict", "--trust-pickle", "--checkpoint", str(tmp_path / "vgg.pth"), str(image)],
        ["evaluate", "--trust-pickle", "--checkpoint", str(tmp_path / "vgg.pth")],
    ):
        assert main(command) == 1  # never a silent 0 %
        captured = capsys.readouterr()
        err = captured.err.strip().splitlines()
        assert len(err) == 1 and "is [1, 1000], not [1, 10]" in err[0], err
        assert "accuracy" not in captured.out


def test_trusted_pickle_whose_module_is_missing_names_it_and_the_ways_out(tmp_path, monkeypatch):
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "mynet.py").write_text(
        "from torch import nn\n\nclass Net(nn.Sequential):\n    pass\n"
    )
    run_python(
        folder,
        """
        import torch
        from torch import nn
        from mynet import Net
        torch.save(Net(nn.Flatten(), nn.Linear(3072, 10)), "net.pth")
        """,
    )
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CourseError) as error:
        load_model(folder / "net.pth", trust_pickle=True)
    message = str(error.value)
    assert "module 'mynet'" in message and "folder that holds mynet.py" in message
    assert "PYTHONPATH" in message and "cifar-course export" in message
    monkeypatch.chdir(folder)  # the first way out works
    assert load_model(folder / "net.pth", trust_pickle=True)(torch.zeros(1, 3, 32, 32)).shape == (
        1,
        10,
    )


def test_trusted_pickle_of_a_class_defined_in_a_script_names_the_class(tmp_path):
    run_python(
        tmp_path,
        """
        import torch
        from torch import nn

        class Net(nn.Sequential):
            pass

        torch.save(Net(nn.Flatten(), nn.Linear(3072, 10)), "net.pth")
        """,
    )
    with pytest.raises(CourseError, match="class 'Net', which the script that saved it defined"):
        load_model(tmp_path / "net.pth", trust_pickle=True)


def test_export_lecture_layout_loads_into_the_lectures_own_class(tmp_path, capsys):
    torch.manual_seed(3)
    trained = LessonNet()
    save_checkpoint(tmp_path / "lesson_net_epoch10.pt", trained, None, 10)
    out = tmp_path / "for_the_lecture.pth"
    assert (
        main(["export", str(tmp_path / "lesson_net_epoch10.pt"), str(out), "--layout", "lecture"])
        == 0
    )
    assert "model.0.weight ... model.8.bias" in capsys.readouterr().out
    (tmp_path / "model.py").write_text(SEQUENTIAL.format(attr="model"))
    torch.save(outputs_of(trained), tmp_path / "course.pt")
    # the lecture's test.py: its own class, its own plain load
    run_python(
        tmp_path,
        f"""
        import torch
        from model import Tudui
        tudui = Tudui()
        print(tudui.load_state_dict(torch.load("for_the_lecture.pth")))
        tudui.eval()
        {PROBE}
        with torch.no_grad():
            torch.testing.assert_close(tudui(probe), torch.load("course.pt"))
        """,
    )


def test_export_course_layout_is_a_safe_file_and_never_overwrites(tmp_path, capsys):
    path = lecture_whole_model(tmp_path)
    out = tmp_path / "course.pt"
    assert main(["export", str(path), str(out)]) == 0
    state = torch.load(out, weights_only=True)
    assert list(state) == list(LessonNet().state_dict())
    torch.testing.assert_close(outputs_of(load_model(out)), expected_outputs(tmp_path))
    before = out.read_bytes()
    assert main(["export", str(path), str(out)]) == 1
    assert "already exists" in capsys.readouterr().err and out.read_bytes() == before
    assert main(["export", str(path), str(out), "--force"]) == 0


@pytest.mark.slow
def test_train_init_from_starts_a_fresh_run_from_lecture_weights(tmp_path, capsys):
    path = lecture_whole_model(tmp_path)
    out = tmp_path / "run"
    argv = ["train", "--init-from", str(path), "--epochs", "1", "--lr", "1e-12", "--device", "cpu"]
    assert main([*argv, "--out", str(out), "--logdir", str(tmp_path / "logs")]) == 0
    assert "starting from the weights in" in capsys.readouterr().out
    state = torch.load(out / "lesson_net_epoch01.pt", weights_only=True)
    assert state["epoch"] == 1 and len(state["history"]) == 1
    model = LessonNet()
    model.load_state_dict(state["model"])
    # lr 1e-12: one epoch leaves the starting weights as they were
    torch.testing.assert_close(outputs_of(model), expected_outputs(tmp_path))


def test_resume_keeps_its_meaning_and_excludes_init_from(tmp_path, capsys):
    torch.save(LessonNet().state_dict(), tmp_path / "plain.pth")
    assert main(["train", "--resume", str(tmp_path / "plain.pth"), "--out", str(tmp_path)]) == 1
    assert "is not a training checkpoint" in capsys.readouterr().err
    both = ["train", "--resume", "a.pt", "--init-from", "b.pt", "--out", str(tmp_path)]
    assert main(both) == 1
    assert "give only one of them" in capsys.readouterr().err


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_checkpoints_get_the_permissions_torch_save_would_give(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        atomic_save({"x": torch.zeros(1)}, tmp_path / "a.pt")
        torch.save({"x": torch.zeros(1)}, tmp_path / "b.pt")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.pt").stat().st_mode) == mode
    assert stat.S_IMODE((tmp_path / "b.pt").stat().st_mode) == mode


WITHOUT_POOLING = """
import torch
from torch import nn


class Tudui(nn.Module):
    def __init__(self):
        super().__init__()
        self.model1 = nn.Sequential(
            nn.Conv2d(3, 32, 5, 1, 2), nn.Conv2d(32, 32, 5, 1, 2), nn.Conv2d(32, 64, 5, 1, 2),
            nn.Flatten(), nn.Linear(64 * 4 * 4, 64), nn.Linear(64, 10),
        )

    def forward(self, x):
        return self.model1(x)
"""


@pytest.mark.parametrize(
    ("cls", "change", "message"),
    [
        (
            SEQUENTIAL.format(attr="model1"),
            "tudui.model1[0].padding = (100000, 100000)",
            "layer 1 is Conv2d(in_channels=3, out_channels=32, kernel_size=(5, 5), stride=(1, 1), "
            "padding=(100000, 100000)",
        ),
        (SEQUENTIAL.format(attr="model1"), "tudui.model1[1].stride = 1", "layer 2 is MaxPool2d("),
        (WITHOUT_POOLING, "", "6 layers, where the lecture's network has 9"),
    ],
    ids=["a padding of 100000", "a pooling stride of 1", "no pooling layers"],
)
def test_a_crafted_tudui_is_refused_before_it_runs(tmp_path, capsys, cls, change, message):
    """A Tudui made only of allowed classes, whose settings are not the lecture's, is refused
    in one line before its first forward pass (which could ask for terabytes or fail inside)."""
    (tmp_path / "model.py").write_text(cls)
    run_python(
        tmp_path,
        f"""
        import torch
        from model import Tudui
        tudui = Tudui()
        {change}
        torch.save(tudui, "tudui_0.pth")
        """,
    )
    assert main(["evaluate", "--checkpoint", str(tmp_path / "tudui_0.pth")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is not the lecture's network" in err[0] and message in err[0], err
