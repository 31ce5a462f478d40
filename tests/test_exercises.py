"""The exercises: every check says ``Not yet`` to the blanks and ``Correct`` to the solutions, in
the notebooks as a learner runs them, and names the mistake each exercise is about."""

from __future__ import annotations

import importlib
import re
import textwrap
from pathlib import Path
from types import ModuleType

import nbformat
import pytest
import torch
from torch import nn

from cifar_course.exercises import Exercise, Feedback

ROOT = Path(__file__).resolve().parents[1]
LESSONS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
FOLDER = ROOT / "notebooks" / "exercises"
EXERCISES = sorted(FOLDER.glob("[0-9][0-9]_*.ipynb"))
SOLUTIONS = sorted((FOLDER / "solutions").glob("[0-9][0-9]_*.ipynb"))
CHECK = re.compile(r"^(q\d)\.check\((.*)\)$")


def module_for(path: Path) -> ModuleType:
    return importlib.import_module(f"cifar_course.exercises.lesson{path.name[:2]}")


def exercises_in(module: ModuleType) -> dict[str, Exercise]:
    return {
        n: q
        for n in ("q1", "q2", "q3", "q4", "q5")
        if isinstance(q := getattr(module, n, None), Exercise)
    }


def check_cells(nb) -> list[int]:
    return [
        i for i, c in enumerate(nb.cells) if c.cell_type == "code" and CHECK.match(c.source.strip())
    ]


def test_every_lesson_has_exercises_and_solutions_with_three_to_five_exercises():
    # named for what they are, so that JupyterLab's tabs tell a lesson from its exercises
    assert [p.name for p in EXERCISES] == [f"{p.stem}_exercises.ipynb" for p in LESSONS]
    assert [p.name for p in SOLUTIONS] == [f"{p.stem}_solutions.ipynb" for p in LESSONS]
    for path in EXERCISES:
        nb = nbformat.read(path, as_version=4)
        numbers = [CHECK.match(nb.cells[i].source.strip())[1] for i in check_cells(nb)]
        assert numbers == list(exercises_in(module_for(path))), path.name
        assert 3 <= len(numbers) <= 5, path.name


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.stem)
def test_each_lesson_links_its_exercises_in_its_last_cell(path):
    last = nbformat.read(path, as_version=4).cells[-1]
    assert last.cell_type == "markdown"
    assert f"(exercises/{path.stem}_exercises.ipynb)" in last.source


def test_the_readme_table_links_each_lessons_exercises():
    readme = (ROOT / "README.md").read_text()
    for path in LESSONS:
        row = next(line for line in readme.splitlines() if line.startswith(f"| {path.name[:2]} | "))
        assert f"(notebooks/exercises/{path.stem}_exercises.ipynb)" in row


@pytest.mark.parametrize("path", EXERCISES, ids=lambda p: p.stem)
def test_solution_notebook_is_the_exercise_notebook_with_the_answers_filled_in(path):
    exercise = nbformat.read(path, as_version=4)
    solution_name = path.name.replace("_exercises.ipynb", "_solutions.ipynb")
    solution = nbformat.read(FOLDER / "solutions" / solution_name, as_version=4)
    module = module_for(path)
    checks = check_cells(exercise)
    assert [exercise.cells[i].source for i in checks] == [
        c.source for c in solution.cells if CHECK.match(c.source.strip())
    ]
    solved = check_cells(solution)
    for i, j in zip(checks, solved, strict=True):
        number = CHECK.match(exercise.cells[i].source.strip())[1]
        assert exercise.cells[i - 2].source == solution.cells[j - 2].source  # the task itself
        assert exercise.cells[i - 1].source != solution.cells[j - 1].source
        assert solution.cells[j - 1].source == exercises_in(module)[number].solution_code
        assert "____" not in solution.cells[j - 1].source
        assert exercise.cells[i + 1].source == f"# {number}.hint()\n# {number}.solution()"


def printed(cell) -> str:
    assert [o.output_type for o in cell.outputs] == ["stream"], cell.source
    return cell.outputs[0].text


@pytest.mark.parametrize("path", EXERCISES, ids=lambda p: p.stem)
def test_with_the_blanks_in_place_every_check_says_not_yet(path, run_alone, tmp_path):
    nb = run_alone(path, tmp_path)
    checks = check_cells(nb)
    for i in checks:
        text = printed(nb.cells[i])
        assert text.startswith("Not yet: ") and text.count("\n") == 1, text
        answer = next(c for c in reversed(nb.cells[:i]) if c.cell_type == "code")
        if "____" in answer.source:  # a blank left in place is named as such
            assert "____" in text, text
    assert len(checks) == len(exercises_in(module_for(path)))


@pytest.mark.parametrize("path", SOLUTIONS, ids=lambda p: p.stem)
def test_in_the_solutions_every_check_says_correct(path, run_alone, tmp_path):
    nb = run_alone(path, tmp_path)
    for i in check_cells(nb):
        text = printed(nb.cells[i])
        assert text.startswith("Correct: ") and text.count("\n") == 1, text


def test_the_stored_solution_outputs_say_correct():
    for path in SOLUTIONS:
        nb = nbformat.read(path, as_version=4)
        for i in check_cells(nb):
            assert printed(nb.cells[i]).startswith("Correct: "), path.name
    for path in EXERCISES:  # the learner's copy starts clean
        nb = nbformat.read(path, as_version=4)
        assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), path.name


# ---- unit tests of each check, in-process -----------------------------------------------------


def namespace(path: Path, answers: bool) -> dict:
    """The notebook's imports, plus every reference answer when ``answers``."""
    nb = nbformat.read(path, as_version=4)
    scope: dict = {}
    exec(nb.cells[2].source, scope)  # the imports cell
    if answers:
        for exercise in exercises_in(module_for(path)).values():
            exec(exercise.solution_code, scope)
    return scope


def run_checks(path: Path, scope: dict) -> dict[str, Feedback]:
    nb = nbformat.read(path, as_version=4)
    results = {}
    for i in check_cells(nb):
        number, args = CHECK.match(nb.cells[i].source.strip()).groups()
        results[number] = eval(f"{number}.evaluate({args})", scope)
    return results


@pytest.mark.parametrize("path", EXERCISES, ids=lambda p: p.stem)
def test_every_reference_solution_is_correct(path):
    results = run_checks(path, namespace(path, answers=True))
    assert all(f.correct for f in results.values()), results


@pytest.mark.parametrize("path", EXERCISES, ids=lambda p: p.stem)
def test_odd_answers_get_not_yet_and_never_a_traceback(path):
    def raises(*args, **kwargs):
        raise ValueError("my own bug")

    scope = namespace(path, answers=True)
    nb = nbformat.read(path, as_version=4)
    for i in check_cells(nb):
        number, args = CHECK.match(nb.cells[i].source.strip()).groups()
        others = "".join(f", {name}" for name in args.split(", ")[1:])
        for answer in (None, 42, "text", [], lambda *a, **k: None, raises):
            scope["odd"] = answer
            feedback = eval(f"{number}.evaluate(odd{others})", scope)
            assert not feedback.correct, (number, answer)
            assert str(feedback).startswith("Not yet: ") and "\n" not in str(feedback)
            if answer is raises and callable(scope[args.split(", ")[0]]):
                # the learner's own exception is the reason given
                assert "ValueError: my own bug" in feedback.message, feedback.message


def test_hint_and_solution_print_without_running_anything(capsys):
    for path in EXERCISES:
        for exercise in exercises_in(module_for(path)).values():
            exercise.hint()
            exercise.solution()
            out = capsys.readouterr().out
            assert out.startswith(f"Hint ({exercise.name}): ")
            assert exercise.solution_code in out


def test_a_hint_in_a_kernel_is_markdown_so_its_code_renders(monkeypatch):
    """In Jupyter a hint is shown as markdown (`code` rendered as code, not as backticks), with
    the same text as its plain form."""
    import IPython
    import IPython.display

    shown = []
    monkeypatch.setattr(IPython, "get_ipython", lambda: object())
    monkeypatch.setattr(IPython.display, "display", lambda obj, raw: shown.append((obj, raw)))
    exercise = next(iter(exercises_in(module_for(EXERCISES[0])).values()))
    exercise.hint()
    ((bundle, raw),) = shown
    assert raw and bundle["text/markdown"] == bundle["text/plain"]
    assert bundle["text/markdown"].startswith(f"Hint ({exercise.name}): ")


# The common mistakes: (lesson, exercise, wrong answer, what the feedback must say).
MISTAKES = [
    (
        "01",
        "q1",
        """
        def conv_output_size(size, kernel_size, stride=1, padding=0):
            return (size + 2 * padding - kernel_size) // stride
        """,
        "for size=32, kernel_size=5, stride=1, padding=2 you return 31; PyTorch's Conv2d gives 32",
    ),
    (
        "01",
        "q1",
        """
        def conv_output_size(size, kernel_size, stride=1, padding=0):
            return (size + 2 * padding - kernel_size) / stride + 1
        """,
        "a float; sizes and counts are whole numbers: divide with //",
    ),
    (
        "01",
        "q1",
        """
        def conv_output_size(size, kernel_size, stride=1, padding=0):
            return size - kernel_size + 1
        """,
        "padding=2 you return 28; PyTorch's Conv2d gives 32",
    ),
    (
        "01",
        "q2",
        """
        shapes_64 = [
            (64, 32, 64, 64), (64, 32, 32, 32), (64, 32, 32, 32), (64, 32, 16, 16),
            (64, 64, 16, 16), (64, 64, 8, 8), (64, 1024),
        ]
        """,
        "after layer 7 (Flatten) the length in your [64, 1024] is not what the layer gives",
    ),
    (
        "01",
        "q2",
        """
        shapes_64 = [
            (32, 64, 64), (32, 32, 32), (32, 32, 32), (32, 16, 16),
            (64, 16, 16), (64, 8, 8), (4096,),
        ]
        """,
        "has no batch dimension: the 64 goes in front",
    ),
    (
        "01",
        "q3",
        """
        def build_net():
            return nn.Sequential(
                nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                nn.Flatten(), nn.Linear(1024, 10),
            )
        """,
        "mat1 and mat2 shapes cannot be multiplied (2x8192 and 1024x10)",
    ),
    (
        "01",
        "q3",
        """
        def build_net():
            return nn.Sequential(
                nn.Conv2d(3, 16, 3, padding=1), nn.MaxPool2d(2), nn.ReLU(),
                nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                nn.Flatten(), nn.Linear(8192, 10),
            )
        """,
        "layer 2 is MaxPool2d; the table has ReLU() there",
    ),
    (
        "01",
        "q3",
        """
        def build_net():
            return nn.Sequential(
                nn.Conv2d(3, 16, 3), nn.ReLU(), nn.MaxPool2d(2),
                nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                nn.Flatten(), nn.Linear(8192, 10),
            )
        """,
        "layer 1 is Conv2d(in_channels=3, out_channels=16, kernel_size=3, stride=1, padding=0)",
    ),
    (
        "01",
        "q4",
        """
        def conv_parameters(c_in, c_out, kernel_size, bias=True):
            return c_out * c_in * kernel_size * kernel_size
        """,
        "for Conv2d(3, 32, 5, bias=True) you return 2400; PyTorch's layer has 2,432",
    ),
    (
        "02",
        "q1",
        """
        def save_and_reload(model, make_model, path):
            torch.save(model, path)
            return torch.load(path, weights_only=False)
        """,
        "weights_only=True) refuses the file",
    ),
    (
        "02",
        "q1",
        """
        def save_and_reload(model, make_model, path):
            torch.save(dict(model.named_parameters()), path)
            new = make_model()
            new.load_state_dict(torch.load(path), strict=False)
            return new
        """,
        "such as layers.1.running_mean",
    ),
    (
        "02",
        "q1",
        """
        def save_and_reload(model, make_model, path):
            torch.save(model.state_dict(), path)
            return make_model()
        """,
        "the new model never read the file",
    ),
    (
        "02",
        "q1",
        """
        def save_and_reload(model, make_model, path):
            torch.save(model.state_dict(), path)
            return model
        """,
        "you returned the model you were given",
    ),
    (
        "02",
        "q2",
        """
        def load_whole_model(path):
            return torch.load(path, weights_only=False)
        """,
        "loading a file ran a function that the file asked for",
    ),
    (
        "02",
        "q2",
        """
        def load_whole_model(path):
            try:
                layers = [nn.Sequential, nn.Conv2d, nn.MaxPool2d, nn.Flatten, nn.Linear]
                with torch.serialization.safe_globals([LessonNetSequential, *layers]):
                    return torch.load(path)
            except Exception:
                return torch.load(path, weights_only=False)
        """,
        "loading a file ran a function that the file asked for",
    ),
    (
        "02",
        "q2",
        """
        def load_whole_model(path):
            return torch.load(path)
        """,
        "Unsupported global: GLOBAL cifar_course.models.LessonNetSequential",
    ),
    (
        "02",
        "q3",
        """
        def to_course_keys(lecture_state):
            return {k.replace('model1.', 'model.'): v for k, v in lecture_state.items()}
        """,
        "LessonNet has no key 'model.0.weight'",
    ),
    (
        "02",
        "q3",
        """
        def to_course_keys(lecture_state):
            return dict(zip(sorted(LessonNet().state_dict()), lecture_state.values()))
        """,
        "size mismatch for conv1.weight",
    ),
    (
        "03",
        "q1",
        """
        def accuracy(logits, labels):
            return (logits.argmax(0) == labels).float().mean()
        """,
        "you took argmax over dim 0, the batch",
    ),
    (
        "03",
        "q1",
        """
        def accuracy(logits, labels):
            return (logits.argmax(1) == labels).sum().item()
        """,
        "you return 5, the count; divide by the number of images",
    ),
    (
        "03",
        "q2",
        """
        def train_one_epoch(model, loader, loss_fn, optimizer):
            for images, labels in loader:
                outputs = model(images)
                loss = loss_fn(outputs, labels)
                loss.backward()
                optimizer.step()
        """,
        "stays in eval mode (Dropout and BatchNorm behave as at test time) and gradients add up",
    ),
    (
        "03",
        "q2",
        """
        def train_one_epoch(model, loader, loss_fn, optimizer):
            model.train()
            for images, labels in loader:
                loss = loss_fn(model(images), labels)
                loss.backward()
                optimizer.step()
        """,
        "the gradients add up across steps",
    ),
    (
        "03",
        "q2",
        """
        def train_one_epoch(model, loader, loss_fn, optimizer):
            for images, labels in loader:
                optimizer.zero_grad()
                loss_fn(model(images), labels).backward()
                optimizer.step()
        """,
        "the model stays in eval mode, so Dropout is off",
    ),
    (
        "03",
        "q2",
        """
        def train_one_epoch(model, loader, loss_fn, optimizer):
            model.train()
            for images, labels in loader:
                loss_fn(model(images), labels).backward()
                optimizer.zero_grad()
                optimizer.step()
        """,
        "the weights did not change at all",
    ),
    (
        "03",
        "q3",
        """
        def evaluate(model, loader):
            correct = total = 0
            with torch.no_grad():
                for x, y in loader:
                    correct += (model(x).argmax(1) == y).sum().item()
                    total += len(y)
            return correct / total
        """,
        "the model ran in training mode",
    ),
    (
        "03",
        "q3",
        """
        def evaluate(model, loader):
            model.eval()
            correct = total = 0
            for x, y in loader:
                correct += (model(x).argmax(1) == y).sum().item()
                total += len(y)
            return correct / total
        """,
        "autograd recorded every step of the evaluation",
    ),
    (
        "03",
        "q3",
        """
        def evaluate(model, loader):
            model.eval()
            with torch.no_grad():
                scores = [(model(x).argmax(1) == y).float().mean().item() for x, y in loader]
            return sum(scores) / len(scores)
        """,
        "the mean of the batches' accuracies",
    ),
    (
        "04",
        "q1",
        """
        def to_device(model, images, labels, device):
            model.to(device)
            images.to(device)
            labels.to(device)
            return model, images, labels
        """,
        "images is still on cpu, not meta: Tensor.to returns a new tensor",
    ),
    (
        "04",
        "q1",
        """
        def to_device(model, images, labels, device):
            return model.to(device), images.to(device), labels.to(device, torch.float32)
        """,
        "keeping torch.long",
    ),
    (
        "04",
        "q2",
        """
        def time_op(run, sync, warmup=3, repeats=10):
            for _ in range(warmup):
                run()
            sync()
            start = time.perf_counter()
            for _ in range(repeats):
                run()
            return (time.perf_counter() - start) / repeats
        """,
        "the clock stopped before the work finished. Call sync(), then read the clock",
    ),
    (
        "04",
        "q2",
        """
        def time_op(run, sync, warmup=3, repeats=10):
            start = time.perf_counter()
            for _ in range(repeats):
                run()
            sync()
            return (time.perf_counter() - start) / repeats
        """,
        "expected 3 warm-up calls and 10 timed ones",
    ),
    (
        "04",
        "q2",
        """
        def time_op(run, sync, warmup=3, repeats=10):
            for _ in range(warmup):
                run()
            start = time.perf_counter()
            for _ in range(repeats):
                run()
            sync()
            return (time.perf_counter() - start) / repeats
        """,
        "nothing waits for the 3 warm-up calls to finish",
    ),
    (
        "04",
        "q2",
        """
        def time_op(run, sync, warmup=3, repeats=10):
            for _ in range(warmup):
                run()
            sync()
            start = time.perf_counter()
            for _ in range(repeats):
                run()
            sync()
            return time.perf_counter() - start
        """,
        "the time of all 10 calls; divide by repeats",
    ),
    (
        "04",
        "q3",
        """
        def choose_device():
            return 'cuda'
        """,
        "on a machine with an Apple GPU and no NVIDIA one you chose 'cuda'; expected 'mps'",
    ),
    (
        "04",
        "q3",
        """
        def choose_device():
            return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
        """,
        "you chose 'cpu'; expected 'mps'",
    ),
    (
        "05",
        "q1",
        """
        def preprocess(image):
            to_input = transforms.Compose([transforms.Resize((32, 32)), transforms.ToTensor()])
            return to_input(image).unsqueeze(0)
        """,
        "for an RGBA photo (a PNG with transparency) your tensor has shape [1, 4, 32, 32]; "
        "expected [1, 3, 32, 32]. Convert the image to RGB first",
    ),
    (
        "05",
        "q1",
        """
        def preprocess(image):
            to_input = transforms.Compose([transforms.Resize((32, 32)), transforms.ToTensor()])
            return to_input(image.convert('RGB'))
        """,
        "Add the batch dimension with .unsqueeze(0)",
    ),
    (
        "05",
        "q1",
        """
        def preprocess(image):
            to_input = transforms.Compose([transforms.Resize(32), transforms.ToTensor()])
            return to_input(image.convert('RGB')).unsqueeze(0)
        """,
        "Resize(32) only sets the shorter side",
    ),
    (
        "05",
        "q1",
        """
        def preprocess(image):
            to_input = transforms.Compose([transforms.Resize((32, 32)), transforms.PILToTensor()])
            return to_input(image.convert('RGB')).unsqueeze(0).float()
        """,
        "not 0..255",
    ),
    (
        "05",
        "q2",
        """
        def top_class(logits, class_names):
            return class_names[logits.argmax(0)[0]], logits.softmax(1).max().item()
        """,
        "argmax over dim 0 of a [1, 10] tensor",
    ),
    (
        "05",
        "q2",
        """
        def top_class(logits, class_names):
            return class_names[logits.argmax()], logits.max().item()
        """,
        "that is its logit",
    ),
    (
        "05",
        "q2",
        """
        def top_class(logits, class_names):
            return class_names[logits.argmax()], logits.softmax(0).max().item()
        """,
        "the softmax ran over dim 0",
    ),
    (
        "05",
        "q3",
        """
        def classify(model, image, preprocess):
            with torch.no_grad():
                return top_class(model(preprocess(image)), CLASSES)
        """,
        "the model ran in training mode",
    ),
    (
        "05",
        "q3",
        """
        def classify(model, image, preprocess):
            model.eval()
            return top_class(model(preprocess(image)), CLASSES)
        """,
        "autograd recorded the forward pass",
    ),
    (
        "06",
        "q1",
        """
        def conv_block(c_in, c_out):
            return nn.Sequential(
                nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
                nn.ReLU(), nn.BatchNorm2d(c_out),
            )
        """,
        "your block is Conv2d -> ReLU -> BatchNorm2d",
    ),
    (
        "06",
        "q1",
        """
        def conv_block(c_in, c_out):
            return nn.Sequential(
                nn.Conv2d(c_in, c_out, 3, padding=1),
                nn.BatchNorm2d(c_out), nn.ReLU(),
            )
        """,
        "pass bias=False",
    ),
    (
        "06",
        "q1",
        """
        def conv_block(c_in, c_out):
            return nn.Sequential(
                nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
                nn.BatchNorm2d(c_in), nn.ReLU(),
            )
        """,
        "BatchNorm2d(3) follows a convolution with 16 output channels",
    ),
    (
        "06",
        "q1",
        """
        def conv_block(c_in, c_out):
            return nn.Sequential(
                nn.Conv2d(c_in, c_out, 3, bias=False),
                nn.BatchNorm2d(c_out), nn.ReLU(),
            )
        """,
        "use kernel_size=3, padding=1",
    ),
    (
        "06",
        "q2",
        """
        def triangular_lr(step, total, peak, warmup=0.2):
            return peak * step / total
        """,
        "at step 1 of 100 (peak 0.4, warm-up 20%) you return 0.004; the schedule gives 0.02",
    ),
    (
        "06",
        "q2",
        """
        def triangular_lr(step, total, peak, warmup=0.2):
            rise = int(total * warmup)
            return peak * step / rise if step < rise else peak * (total - step) / total
        """,
        "at step 20 of 100 (peak 0.4, warm-up 20%) you return 0.32; the schedule gives 0.4",
    ),
    (
        "06",
        "q3",
        """
        def smooth_targets(labels, num_classes, smoothing):
            targets = torch.full((len(labels), num_classes), smoothing / (num_classes - 1))
            targets[torch.arange(len(labels)), labels] = 1 - smoothing
            return targets
        """,
        "PyTorch spreads the 0.2 over all 10 classes, the true one included",
    ),
    (
        "06",
        "q3",
        """
        def smooth_targets(labels, num_classes, smoothing):
            return nn.functional.one_hot(labels, num_classes).float()
        """,
        "your true class gets 1 and the others 0",
    ),
    # found in review: wrong answers that once passed, or got the wrong reason
    (
        "01",
        "q3",
        """
        def build_net():
            return nn.Sequential(
                nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2, stride=1),
                nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                nn.Flatten(), nn.Linear(32 * 31 * 31, 10),
            )
        """,
        "layer 3 is MaxPool2d(kernel_size=2, stride=1)",
    ),
    (
        "01",
        "q3",
        """
        def build_net():
            return nn.Sequential(
                nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.ReLU(), nn.MaxPool2d(2),
                nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                nn.Flatten(), nn.Linear(8192, 10),
            )
        """,
        "layer 1 has no bias",
    ),
    (
        "02",
        "q1",
        """
        import copy
        def save_and_reload(model, make_model, path):
            torch.save(model.state_dict(), path)
            return copy.deepcopy(model)
        """,
        "was not built by make_model()",
    ),
    (
        "02",
        "q1",
        """
        def save_and_reload(model, make_model, path):
            torch.save(model.state_dict(), path)
            new = make_model()
            new.load_state_dict(model.state_dict())
            return new
        """,
        "the new model never read the file",
    ),
    (
        "02",
        "q1",
        """
        import pickle
        def save_and_reload(model, make_model, path):
            with open(path, "wb") as f:
                pickle.dump(model.state_dict(), f)
            new = make_model()
            with open(path, "rb") as f:
                new.load_state_dict(pickle.load(f))
            return new
        """,
        "refuses the file: it was not written by torch.save",
    ),
    (
        "02",
        "q2",
        """
        def load_whole_model(path):
            layers = [nn.Sequential, nn.Conv2d, nn.MaxPool2d, nn.Flatten, nn.Linear]
            try:
                with torch.serialization.safe_globals([LessonNetSequential, *layers]):
                    return torch.load(path)
            except Exception:
                return None
        """,
        "returned instead of raising",
    ),
    (
        "03",
        "q2",
        """
        def train_one_epoch(model, loader, loss_fn, optimizer):
            model.train()
            for images, labels in loader:
                loss_fn(model(images), labels).backward()
                optimizer.zero_grad()
                optimizer.step()
        """,
        "with nothing clearing the gradients in between",
    ),
    (
        "03",
        "q3",
        """
        def evaluate(model, loader):
            model.eval()
            correct = 0
            with torch.no_grad():
                for x, y in loader:
                    correct += (model(x).argmax(1) == y).sum().item()
            return correct / (len(loader) * 8)
        """,
        "you divided by 3 batches x 8 = 24 images",
    ),
    (
        "04",
        "q2",
        """
        def time_op(run, sync, warmup=3, repeats=10):
            for _ in range(warmup):
                run()
            sync()
            start = time.perf_counter()
            for _ in range(repeats):
                run()
            sync()
            return 1000 * (time.perf_counter() - start) / repeats
        """,
        "that looks like milliseconds; return seconds",
    ),
    (
        "04",
        "q2",
        """
        def time_op(run, sync, warmup=3, repeats=10):
            for _ in range(warmup):
                run()
            sync()
            start = time.perf_counter()
            for _ in range(repeats):
                run()
            sync()
            return (time.perf_counter() - start) / (warmup + repeats)
        """,
        "Divide the time of the timed calls by their number",
    ),
    (
        "04",
        "q2",
        """
        def time_op(run, sync, warmup=3, repeats=10):
            for _ in range(warmup):
                run()
            sync()
            start = time.perf_counter()
            for _ in range(repeats):
                run()
            stop = time.perf_counter()
            sync()
            return (stop - start) / repeats
        """,
        "the clock stopped before the work finished",
    ),
    (
        "05",
        "q1",
        """
        import numpy as np
        def preprocess(image):
            pixels = np.asarray(image.convert("RGB").resize((32, 32))) / 255.0
            return torch.from_numpy(pixels).permute(2, 0, 1).unsqueeze(0)
        """,
        "your tensor holds torch.float64",
    ),
    (
        "05",
        "q1",
        """
        def preprocess(image):
            to_input = transforms.Compose([transforms.Resize((32, 32)), transforms.ToTensor()])
            return to_input(image.convert("RGB")).permute(1, 2, 0).unsqueeze(0)
        """,
        "The channels go first",
    ),
    (
        "07",
        "q1",
        """
        def average_gradients(per_process):
            return [sum(grads) for grads in zip(*per_process)]
        """,
        "an all-reduce sums; divide by the number of processes",
    ),
    (
        "07",
        "q1",
        """
        def average_gradients(per_process):
            return per_process[0]
        """,
        "differs from the gradient of the whole batch",
    ),
    (
        "07",
        "q2",
        """
        def shares(n, world_size, epoch, seed):
            order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
            order += order[: -(-n // world_size) * world_size - n]
            return [order[r::world_size] for r in range(world_size)]
        """,
        "epoch 0 and epoch 1 share the data in the same order",
    ),
    (
        "07",
        "q2",
        """
        def shares(n, world_size, epoch, seed):
            order = torch.randperm(n, generator=torch.Generator().manual_seed(seed + epoch))
            return [order[r::world_size].tolist() for r in range(world_size)]
        """,
        "each process must take the same number of steps",
    ),
    (
        "07",
        "q2",
        """
        def shares(n, world_size, epoch, seed):
            order = torch.randperm(n).tolist()
            order += order[: -(-n // world_size) * world_size - n]
            return [order[r::world_size] for r in range(world_size)]
        """,
        "two calls with the same arguments gave different shares",
    ),
    (
        "07",
        "q3",
        """
        def save_checkpoint(model, path, rank):
            torch.save(model.module.state_dict(), path)
        """,
        "rank 1 wrote a checkpoint too",
    ),
    (
        "07",
        "q3",
        """
        def save_checkpoint(model, path, rank):
            if rank == 0:
                torch.save(model.state_dict(), path)
        """,
        "the keys start with 'module.'",
    ),
    (
        "08",
        "q1",
        """
        def whitening_filters(patches, eps):
            centred = patches - patches.mean(0)
            eigenvalues, eigenvectors = torch.linalg.eigh(centred.T @ centred / (len(patches) - 1))
            return eigenvectors.T
        """,
        "their variances are the eigenvalues",
    ),
    (
        "08",
        "q1",
        """
        def whitening_filters(patches, eps):
            centred = patches - patches.mean(0)
            eigenvalues, eigenvectors = torch.linalg.eigh(centred.T @ centred / (len(patches) - 1))
            return eigenvectors.T / (eigenvalues + eps)[:, None]
        """,
        "not by the eigenvalue itself",
    ),
    (
        "08",
        "q1",
        """
        def whitening_filters(patches, eps):
            centred = patches - patches.mean(0)
            eigenvalues, eigenvectors = torch.linalg.eigh(centred.T @ centred / (len(patches) - 1))
            return eigenvectors / torch.sqrt(eigenvalues + eps)[:, None]
        """,
        "The eigenvectors are the columns of what torch.linalg.eigh returns",
    ),
    (
        "08",
        "q1",
        """
        def whitening_filters(patches, eps):
            eigenvalues, eigenvectors = torch.linalg.eigh(patches.T @ patches / (len(patches) - 1))
            return eigenvectors.T / torch.sqrt(eigenvalues + eps)[:, None]
        """,
        "subtract patches.mean(0) before computing the covariance",
    ),
    (
        "08",
        "q1",
        """
        def whitening_filters(patches, eps):
            centred = patches - patches.mean(0)
            eigenvalues, eigenvectors = torch.linalg.eigh(centred.T @ centred / (len(patches) - 1))
            return eigenvectors.T / torch.sqrt(eigenvalues)[:, None]
        """,
        "add eps to each eigenvalue before the square root",
    ),
    (
        "08",
        "q2",
        """
        def flips_for_epoch(base, epoch):
            return base
        """,
        "epochs 0 and 1 mirror the same images",
    ),
    (
        "08",
        "q2",
        """
        def flips_for_epoch(base, epoch):
            return ~base if epoch % 2 == 0 else base
        """,
        "in epoch 0 mirror exactly the images of the first, random choice",
    ),
    (
        "08",
        "q2",
        """
        def flips_for_epoch(base, epoch):
            if epoch % 2 == 1:
                base.logical_not_()
            return base
        """,
        "your function changed base itself",
    ),
    (
        "08",
        "q2",
        """
        def flips_for_epoch(base, epoch):
            return base ^ (epoch % 2)
        """,
        "torch.where needs True/False (torch.bool)",
    ),
    (
        "08",
        "q2",
        """
        def flips_for_epoch(base, epoch):
            flipped = base.clone()
            flipped[: epoch % 2 * 250] ^= True  # only the first half changes side
            return flipped
        """,
        "only 250 of 500 images changed side",
    ),
    (
        "08",
        "q3",
        """
        @torch.no_grad()
        def ema_update(average, current, decay):
            for name, tensor in average.items():
                if tensor.is_floating_point():
                    tensor.mul_(1 - decay).add_(current[name], alpha=decay)
                else:
                    tensor.copy_(current[name])
        """,
        "decay is the share the average keeps",
    ),
    (
        "08",
        "q3",
        """
        def ema_update(average, current, decay):
            return {k: decay * v + (1 - decay) * current[k] for k, v in average.items()}
        """,
        "update its tensors in place",
    ),
    (
        "08",
        "q3",
        """
        @torch.no_grad()
        def ema_update(average, current, decay):
            for name, tensor in average.items():
                if "running" in name:  # BatchNorm's statistics left behind
                    continue
                if tensor.is_floating_point():
                    tensor.lerp_(current[name], 1 - decay)
                else:
                    tensor.copy_(current[name])
        """,
        "running_mean is not 0.9 * average + 0.1 * current",
    ),
    (
        "08",
        "q3",
        """
        @torch.no_grad()
        def ema_update(average, current, decay):
            for name, tensor in average.items():
                if tensor.is_floating_point():
                    tensor.lerp_(current[name], 1 - decay)
        """,
        "is a counter (integers), not a weight: copy it",
    ),
    (
        "08",
        "q3",
        """
        @torch.no_grad()
        def ema_update(average, current, decay):
            for name, tensor in average.items():
                tensor.lerp_(current[name], 1 - decay)
        """,
        "ema_update raised NotImplementedError",
    ),
    (
        "08",
        "q3",
        """
        @torch.no_grad()
        def ema_update(average, current, decay):
            for name, tensor in average.items():
                if tensor.is_floating_point():
                    current[name].lerp_(tensor, decay)
                    tensor.copy_(current[name])
                else:
                    tensor.copy_(current[name])
        """,
        "only the average should move",
    ),
    # found by the audit of 2026-11-28: each of these was marked correct, or got a wrong reason
    (
        "07",
        "q2",
        """
        def shares(n, world_size, epoch, seed):
            generator = torch.Generator().manual_seed(epoch)  # the seed is ignored
            order = torch.randperm(n, generator=generator).tolist()
            total = -(-n // world_size) * world_size
            order += order[: total - n]
            return [order[rank::world_size] for rank in range(world_size)]
        """,
        "seed 0 and seed 1 share the data in the same order",
    ),
    (
        "07",
        "q2",
        """
        def shares(n, world_size, epoch, seed):
            order = torch.randperm(n, generator=torch.Generator().manual_seed(seed + epoch))
            order = order[: n // world_size * world_size].tolist()  # the remainder dropped
            return [order[rank::world_size] for rank in range(world_size)]
        """,
        "repeat indices from the start rather than drop any",
    ),
    (
        "06",
        "q2",
        """
        def triangular_lr(step, total, peak, warmup=0.2):
            rise = total * warmup  # not a whole number of steps
            if step < rise:
                return peak * step / rise
            return peak * max(0.0, (total - step) / max(1, total - rise))
        """,
        "the warm-up lasts int(total * warmup) steps, and at least one",
    ),
    (
        "06",
        "q2",
        """
        def triangular_lr(step, total, peak, warmup=0.2):
            rise = int(total * warmup)  # 0 for a short run
            if step < rise:
                return peak * step / rise
            return peak * max(0.0, (total - step) / max(1, total - rise))
        """,
        "Here total x warmup = 0.6",
    ),
    (
        "06",
        "q1",
        """
        def conv_block(c_in, c_out):
            return nn.Sequential(
                nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out),
                nn.ReLU(), nn.MaxPool2d(2),
            )
        """,
        "the order is right, but the block is the three layers only; drop MaxPool2d",
    ),
    (
        "05",
        "q1",
        """
        from torchvision import transforms
        def preprocess(image):
            return transforms.Compose([
                transforms.Resize((32, 32)), transforms.ToTensor(),
                transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
            ])(image.convert("RGB")).unsqueeze(0)
        """,
        "without Normalize: leave Normalize out",
    ),
    (
        "03",
        "q3",
        """
        def evaluate(model, loader):
            model.training = False  # the layers inside stay in training mode
            correct, total = 0, 0
            with torch.no_grad():
                for images, labels in loader:
                    correct += (model(images).argmax(dim=1) == labels).sum().item()
                    total += len(labels)
            return correct / total
        """,
        "the model ran in training mode",
    ),
    (
        "05",
        "q3",
        """
        def classify(model, image, preprocess):
            model.training = False  # the layers inside stay in training mode
            with torch.no_grad():
                logits = model(preprocess(image))
            return top_class(logits, CLASSES)
        """,
        "the model ran in training mode",
    ),
    (
        "08",
        "q3",
        """
        @torch.no_grad()
        def ema_update(average, current, decay):
            for name, tensor in average.items():
                ____
        """,
        "ema_update still uses the blank ____",
    ),
]


ALTERNATIVES = [
    (
        "01",
        """
        import numpy as np
        def conv_output_size(size, kernel_size, stride=1, padding=0):
            return np.int64((size + 2 * padding - kernel_size) // stride + 1)
        """,
    ),
    (
        "01",
        """
        def build_net():
            return nn.Sequential(
                nn.Conv2d(3, 16, 3, padding="same"), nn.ReLU(), nn.MaxPool2d(2),
                nn.Conv2d(16, 32, 3, padding="same"), nn.ReLU(), nn.MaxPool2d(2),
                nn.Flatten(), nn.Linear(8192, 10),
            )
        """,
    ),
    (
        "02",
        """
        def save_and_reload(model, make_model, path):
            torch.save({"model": model.state_dict(), "epoch": 1}, path)
            new = make_model()
            new.load_state_dict(torch.load(path, weights_only=True)["model"])
            return new
        """,
    ),
    (
        "03",
        """
        def evaluate(model, loader):
            model.eval()
            correct = 0
            with torch.no_grad():
                for x, y in loader:
                    correct += (model(x).argmax(1) == y).sum().item()
            return correct / len(loader.dataset)
        """,
    ),
    (
        "04",
        """
        def to_device(model, images, labels, device):
            return [model.to(device), images.to(device), labels.to(device)]
        """,
    ),
    (
        "04",
        """
        def time_op(run, sync, warmup=3, repeats=10):
            for _ in range(warmup):
                run()
                sync()
            start = time.perf_counter()
            for _ in range(repeats):
                run()
            sync()
            return (time.perf_counter() - start) / repeats
        """,
    ),
    (
        "04",
        """
        def choose_device():
            if torch.cuda.is_available():
                return "cuda"
            if torch.backends.mps.is_available() and torch.backends.mps.is_built():
                return "mps"
            return "cpu"
        """,
    ),
    (
        "04",
        """
        def choose_device():
            return torch.accelerator.current_accelerator() or torch.device("cpu")
        """,
    ),
    (
        "06",
        """
        def conv_block(c_in, c_out):
            return nn.Sequential(
                nn.Conv2d(c_in, c_out, 3, padding="same", bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
            )
        """,
    ),
    (
        "07",
        """
        def shares(n, world_size, epoch, seed):  # contiguous blocks: another fair split
            order = torch.randperm(n, generator=torch.Generator().manual_seed(seed + epoch))
            size = -(-n // world_size)
            order = torch.cat([order, order[: size * world_size - n]]).tolist()
            return [order[r * size : (r + 1) * size] for r in range(world_size)]
        """,
    ),
    (
        "07",
        """
        def average_gradients(per_process):
            return [torch.stack(grads).mean(0) for grads in zip(*per_process)]
        """,
    ),
    (
        "08",
        """
        def whitening_filters(patches, eps):  # ZCA: rotated back, as white as the reference
            covariance = torch.cov(patches.T)
            eigenvalues, eigenvectors = torch.linalg.eigh(covariance)
            return eigenvectors @ torch.diag(1 / torch.sqrt(eigenvalues + eps)) @ eigenvectors.T
        """,
    ),
    (
        "08",
        """
        def flips_for_epoch(base, epoch):
            return base.logical_xor(torch.tensor(epoch % 2 == 1))
        """,
    ),
    (
        "08",
        """
        @torch.no_grad()
        def ema_update(average, current, decay):
            for name, tensor in average.items():
                if tensor.dtype.is_floating_point:
                    tensor.lerp_(current[name], 1 - decay)
                else:
                    tensor.copy_(current[name])
            return average
        """,
    ),
    # found by the audit of 2026-11-28: these were marked "Not yet"
    (
        "02",
        """
        def save_and_reload(model, make_model, path):
            torch.save(model.state_dict(), path)
            new = make_model()
            with open(path, "rb") as f:  # torch.load takes an open file too
                new.load_state_dict(torch.load(f, weights_only=True))
            return new
        """,
    ),
    (
        "07",
        """
        def shares(n, world_size, epoch, seed):
            generator = torch.Generator().manual_seed(seed + epoch)
            order = torch.randperm(n, generator=generator)
            total = -(-n // world_size) * world_size
            order = torch.cat([order, order[: total - n]])
            return [order[rank::world_size] for rank in range(world_size)]  # tensors, not lists
        """,
    ),
]


@pytest.mark.parametrize(("lesson", "answer"), ALTERNATIVES)
def test_right_answers_written_differently_are_correct(lesson, answer):
    path = next(p for p in EXERCISES if p.name.startswith(lesson))
    scope = namespace(path, answers=True)
    exec(textwrap.dedent(answer), scope)
    results = run_checks(path, scope)
    assert all(f.correct for f in results.values()), results


@pytest.mark.parametrize(("lesson", "number", "answer", "expected"), MISTAKES)
def test_each_common_mistake_gets_its_own_message(lesson, number, answer, expected):
    path = next(p for p in EXERCISES if p.name.startswith(lesson))
    scope = namespace(path, answers=True)  # the other answers right, this one wrong
    exec(textwrap.dedent(answer), scope)
    feedback = run_checks(path, scope)[number]
    assert not feedback.correct
    assert expected in feedback.message, feedback.message


def test_every_exercise_has_at_least_one_common_mistake_tested():
    covered = {(lesson, number) for lesson, number, _, _ in MISTAKES}
    for path in EXERCISES:
        for number in exercises_in(module_for(path)):
            assert (path.name[:2], number) in covered, (path.name, number)


def test_q2_tells_a_sessions_allow_list_from_the_functions_own_and_leaves_it_as_it_was():
    """add_safe_globals lasts for the whole session: the check tells a function that relies on an
    earlier call from one that works on its own, lets no call inside the function outlive it, and
    says why."""
    from cifar_course.exercises.lesson02 import q2
    from cifar_course.models import LessonNetSequential

    layers = [nn.Sequential, nn.Conv2d, nn.MaxPool2d, nn.Flatten, nn.Linear]
    before = torch.serialization.get_safe_globals()

    def adds_for_the_session(path):
        torch.serialization.add_safe_globals([LessonNetSequential, *layers])
        return torch.load(path, weights_only=True)

    feedback = q2.evaluate(adds_for_the_session)
    assert feedback.correct, feedback.message
    assert "allows those classes for every later load of this session" in feedback.message
    assert set(torch.serialization.get_safe_globals()) == set(before)

    torch.serialization.add_safe_globals([LessonNetSequential, *layers])  # an earlier cell
    try:
        kept = torch.serialization.get_safe_globals()
        feedback = q2.evaluate(lambda path: torch.load(path, weights_only=True))
        assert feedback.correct, feedback.message
        assert "works only because add_safe_globals, outside the function" in feedback.message
        feedback = q2.evaluate(lambda path: torch.load(path, weights_only=False))
        assert not feedback.correct  # still the mistake it was
        assert "loading a file ran a function" in feedback.message, feedback.message
        assert set(torch.serialization.get_safe_globals()) == set(kept)
    finally:
        torch.serialization.clear_safe_globals()
        torch.serialization.add_safe_globals(before)
