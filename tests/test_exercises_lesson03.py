"""Lesson 03's exercise checks against answers a learner writes: each common mistake gets
``Not yet`` with the message that names it, and right answers written differently from the
reference solution get ``Correct``."""

import pytest
from exercise_cases import alternative_is_correct, mistake_gets_its_message

# (lesson, exercise, wrong answer, what the feedback must say)
MISTAKES = [
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
    # issue 31: numbers as text, gradients left off for the session
    (
        "03",
        "q1",
        """
        def accuracy(logits, labels):
            return str((logits.argmax(dim=1) == labels).float().mean().item())
        """,
        "accuracy returned the text",
    ),
    (
        "03",
        "q1",
        """
        def accuracy(logits, labels):
            return bool((logits.argmax(dim=1) == labels).float().mean() > 0.5)
        """,
        "a truth value",
    ),
    (
        "03",
        "q3",
        """
        def evaluate(model, loader):
            model.eval()
            torch.set_grad_enabled(False)
            correct, total = 0, 0
            for images, labels in loader:
                correct += (model(images).argmax(dim=1) == labels).sum().item()
                total += len(labels)
            return correct / total
        """,
        "evaluate turned gradients off for the rest of the session",
    ),
    (
        "03",
        "q3",
        """
        def evaluate(model, loader):
            model.eval()
            correct = 0
            with torch.no_grad():
                for images, labels in loader:
                    correct += (model(images).argmax(dim=1) == labels).sum().item()
            return correct
        """,
        "the number of right answers",
    ),
]

# (lesson, a right answer written differently)
ALTERNATIVES = [
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
]


@pytest.mark.parametrize(("lesson", "number", "answer", "expected"), MISTAKES)
def test_each_common_mistake_gets_its_own_message(lesson, number, answer, expected):
    mistake_gets_its_message(lesson, number, answer, expected)


@pytest.mark.parametrize(("lesson", "answer"), ALTERNATIVES)
def test_right_answers_written_differently_are_correct(lesson, answer):
    alternative_is_correct(lesson, answer)
