import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn
from torch.utils.data import DataLoader

from cifar_course.checkpoints import load_checkpoint, save_checkpoint
from cifar_course.data import get_datasets
from cifar_course.device import Timer, measure, pick_device
from cifar_course.engine import RunConfig, fit, resume, seed_everything
from cifar_course.evaluate import loss_and_accuracy, predict_all
from cifar_course.models import LessonNet
from cifar_course.recipes.lecture import Lecture, LectureHyper, train_one_epoch


def test_one_epoch_on_the_real_slice_beats_chance(data_root):
    seed_everything(0)
    train, test = get_datasets()
    model = LessonNet()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-2)
    loss_fn = nn.CrossEntropyLoss()
    loader = DataLoader(train, batch_size=4, shuffle=True)
    train_one_epoch(model, loader, loss_fn, optimizer, torch.device("cpu"))
    loss, accuracy = loss_and_accuracy(model, DataLoader(test, 256), loss_fn, torch.device("cpu"))
    assert accuracy > 0.18, accuracy  # chance is 0.10 on 1,000 test images
    assert loss < 2.28  # below ln(10) = 2.303 of a model that knows nothing


@pytest.mark.slow
def test_fit_logs_tensorboard_and_checkpoints(data_root, tmp_path):
    run = RunConfig(out=str(tmp_path / "ck"), logdir=str(tmp_path / "tb"))
    lines = []
    history = fit(Lecture, run, LectureHyper(epochs=2, batch_size=32, log_every=10), lines.append)
    assert [h["epoch"] for h in history] == [1, 2]
    assert lines[-1].startswith("final test accuracy:")
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == [
        "lesson_net_epoch01.pt",
        "lesson_net_epoch02.pt",
    ]
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train_loss", "test_loss", "test_accuracy"} <= tags
    assert [e.step for e in events.Scalars("test_accuracy")] == [1, 2]
    assert len(events.Scalars("train_loss")) == 2 * 63 // 10  # 63 steps an epoch, every 10th
    assert abs(events.Scalars("test_accuracy")[-1].value - history[-1]["test_accuracy"]) < 1e-6


@pytest.mark.slow
def test_resume_matches_an_uninterrupted_run(data_root, tmp_path):
    def train(epochs: int, folder: str, **resume: str) -> list[dict[str, float]]:
        run = RunConfig(out=str(tmp_path / folder), logdir=str(tmp_path / f"t{folder}"), seed=3)
        hyper = LectureHyper(epochs=epochs, batch_size=64)
        return fit(Lecture, RunConfig(**{**run.__dict__, **resume}), hyper, lambda s: None)

    full = train(2, "a")
    train(1, "b")
    resumed = train(2, "b", resume=str(tmp_path / "b" / "lesson_net_epoch01.pt"))
    assert abs(full[-1]["test_loss"] - resumed[-1]["test_loss"]) < 1e-5
    a = load_checkpoint(tmp_path / "a" / "lesson_net_epoch02.pt")["model"]
    b = load_checkpoint(tmp_path / "b" / "lesson_net_epoch02.pt")["model"]
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)


def test_seed_makes_runs_repeatable():
    seed_everything(5)
    a = LessonNet().conv1.weight.clone()
    seed_everything(5)
    assert torch.equal(a, LessonNet().conv1.weight)


def test_device_and_timer():
    assert pick_device("cpu").type == "cpu"
    assert pick_device("auto").type in ("cpu", "cuda", "mps")
    calls = []
    times = measure(lambda: calls.append(1), "cpu", warmup=2, repeat=3)
    assert len(calls) == 5 and len(times) == 3 and all(t >= 0 for t in times)
    with Timer("cpu") as t:
        sum(range(100_000))
    assert t.seconds > 0


def test_a_resumed_run_trains_with_its_own_learning_rate(tmp_path):
    """--resume keeps the optimizer's momentum but not the old run's --lr, which the log shows."""
    model = LessonNet()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    model(torch.rand(2, 3, 32, 32)).sum().backward()
    optimizer.step()
    row = {"epoch": 1, "train_loss": 2.0, "test_loss": 2.0, "test_accuracy": 0.2, "seconds": 1.0}
    path = save_checkpoint(tmp_path / "c.pt", model, optimizer, 1, [row])
    recipe = Lecture(LectureHyper(epochs=2, lr=0.05), torch.device("cpu"), None, 0, print)
    recipe.optimizer = torch.optim.SGD(recipe.model.parameters(), lr=0.01, momentum=0.9)
    _, done, _ = resume(recipe, str(path), epochs=2, log=lambda _: None)
    assert done == 1 and [group["lr"] for group in recipe.optimizer.param_groups] == [0.05]
    assert all("momentum_buffer" in recipe.optimizer.state[p] for p in recipe.model.parameters())


def test_progress_bars_write_to_stdout_in_a_kernel_and_to_stderr_on_the_command_line(
    monkeypatch, capsys
):
    """In a Jupyter kernel a bar on stderr leaves an empty pink band once it clears itself, so
    there the package's bars write to stdout; on the command line stdout is for results."""
    import ast
    import io
    import sys
    import types
    from pathlib import Path

    batches = [(torch.zeros(2, 3, 32, 32), torch.zeros(2, dtype=torch.long))] * 3
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 10))
    monkeypatch.setitem(sys.modules, "ipykernel", types.ModuleType("ipykernel"))  # imported
    predict_all(model, batches, torch.device("cpu"))  # but this is no kernel: stdout is plain
    command_line = capsys.readouterr()
    assert "test" in command_line.err and command_line.out == ""

    class OutStream(io.StringIO):  # what a kernel's sys.stdout is
        pass

    OutStream.__module__ = "ipykernel.iostream"
    kernel_out = OutStream()
    monkeypatch.setattr(sys, "stdout", kernel_out)
    predict_all(model, batches, torch.device("cpu"))
    assert "test" in kernel_out.getvalue() and capsys.readouterr().err == ""
    # every bar of the package goes through that choice
    root = Path(__file__).resolve().parents[1] / "cifar_course"
    calls = []
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "tqdm":
                files = [k.value for k in node.keywords if k.arg == "file"]
                chosen = [
                    f for f in files if getattr(f, "func", None) and f.func.id == "progress_stream"
                ]
                calls.append((path.name, node.lineno, bool(chosen)))
    assert len(calls) >= 2 and all(chosen for _, _, chosen in calls), calls
