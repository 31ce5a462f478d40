"""Exercises for lesson 03, the training loop: accuracy from logits, a loop that never learns,
and an honest evaluation.

The checks run the learner's code on small random batches, made here and called what they are:
test cases for the code, not CIFAR-10. Each is compared with the correct loop on the same batches
and the same random seed, and with the usual mistakes, so that the feedback can name the mistake.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from . import Exercise, NotYet, ____, as_number, run_learner, run_watched

__all__ = ["____", "q1", "q2", "q3", "make_model", "make_loader"]


def make_model() -> nn.Module:
    """A tiny network with BatchNorm and Dropout, the two layers that train() and eval() switch."""
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Flatten(),
        nn.Dropout(0.5),
        nn.Linear(4 * 8 * 8, 10),
    )


def make_loader(images: int = 32, seed: int = 0, batch_size: int = 8) -> DataLoader:
    """A DataLoader of random 8x8 ``(images, labels)``: test cases, not data."""
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(images, 3, 8, 8, generator=generator)
    labels = torch.randint(0, 10, (images,), generator=generator)
    return DataLoader(TensorDataset(inputs, labels), batch_size=batch_size)


def _check_accuracy(accuracy: Any) -> str:
    generator = torch.Generator().manual_seed(3)
    cases = []
    for n in (10, 7, 1):  # 10 x 10 logits: argmax over the wrong dimension still runs
        logits = torch.randn(n, 10, generator=generator)
        labels = logits.argmax(1).clone()
        labels[: n // 2] = (labels[: n // 2] + 1) % 10  # the first half wrong
        cases.append((logits, labels))
    for logits, labels in cases:
        expected = (logits.argmax(1) == labels).float().mean().item()
        got = run_learner("accuracy", accuracy, logits, labels)
        value = as_number(got, "accuracy", "one number, the fraction correct")
        case = f"for {len(labels)} images of which {int(expected * len(labels))} are right"
        if abs(value - expected) < 1e-6:
            continue
        if abs(value - expected * len(labels)) < 1e-6 and len(labels) > 1:
            raise NotYet(f"{case} you return {value:g}, the count; divide by the number of images.")
        wrong_dim = (
            (logits.argmax(0)[: len(labels)] == labels[: len(logits.argmax(0))]).float().mean()
        )
        if len(labels) == 10 and abs(value - wrong_dim.item()) < 1e-6:
            raise NotYet(
                f"{case} you return {value:g}: you took argmax over dim 0, the batch; the classes "
                "are dim 1."
            )
        raise NotYet(f"{case} you return {value:g}; expected {expected:g}.")
    return "right on batches of 10, 7 and 1 images, as a fraction between 0 and 1."


def _reference_epoch(
    model: nn.Module,
    batches: DataLoader,
    loss_fn: nn.Module,
    optimizer: torch.optim.Optimizer,
    train: bool = True,
    zero_grad: bool = True,
) -> None:
    """The correct loop, or one with a chosen mistake."""
    if train:
        model.train()
    for images, labels in batches:
        if zero_grad:
            optimizer.zero_grad()
        loss = loss_fn(model(images), labels)
        loss.backward()
        optimizer.step()


def _run_epoch(epoch: Callable[..., Any], learner: bool) -> tuple[nn.Module, Any]:
    torch.manual_seed(0)
    model = make_model()
    model.eval()  # as it is after an evaluation
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    torch.manual_seed(1)  # Dropout draws from here
    batches = make_loader()
    if learner:
        result = run_learner(
            "train_one_epoch", epoch, model, batches, nn.CrossEntropyLoss(), optimizer
        )
    else:
        result = epoch(model, batches, nn.CrossEntropyLoss(), optimizer)
    return model, result


def _same(a: nn.Module, b: nn.Module) -> bool:
    return all(
        torch.allclose(x, y, atol=1e-5)
        for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    )


def _check_train_one_epoch(train_one_epoch: Any) -> str:
    learner, _ = _run_epoch(train_one_epoch, learner=True)
    reference, _ = _run_epoch(_reference_epoch, learner=False)
    if _same(learner, reference):
        return (
            "your loop takes exactly the steps of the correct one: train mode, and fresh "
            "gradients each step."
        )
    torch.manual_seed(0)
    untouched = make_model()
    if all(
        torch.equal(a, b) for a, b in zip(learner.parameters(), untouched.parameters(), strict=True)
    ):
        raise NotYet(
            "the weights did not change at all: is optimizer.step() called after "
            "loss.backward(), with nothing clearing the gradients in between?"
        )
    mistakes = [
        (
            dict(train=False, zero_grad=False),
            "the model stays in eval mode (Dropout and BatchNorm behave as at test time) and "
            "gradients add up across steps: call model.train() and optimizer.zero_grad().",
        ),
        (
            dict(train=False),
            "the model stays in eval mode, so Dropout is off and BatchNorm does not learn its "
            "statistics: call model.train() at the start.",
        ),
        (
            dict(zero_grad=False),
            "the gradients add up across steps, because nothing clears them: call "
            "optimizer.zero_grad() before loss.backward().",
        ),
    ]
    for options, message in mistakes:
        model, _ = _run_epoch(
            lambda *a, options=options: _reference_epoch(*a, **options), learner=False
        )
        if _same(learner, model):
            raise NotYet(message)
    raise NotYet(
        "after one epoch your weights differ from those of the correct loop on the same batches: "
        "compare the order of zero_grad, forward, loss, backward and step."
    )


def _reference_evaluate(model: nn.Module, batches: DataLoader) -> float:
    model.eval()
    correct = 0
    with torch.no_grad():
        for images, labels in batches:
            correct += (model(images).argmax(1) == labels).sum().item()
    return correct / sum(len(labels) for _, labels in batches)


_EVALUATE_SEED = 7  # the last batch has a right answer, so each mistake gives its own number


def _check_evaluate(evaluate: Any) -> str:
    torch.manual_seed(0)
    model = make_model()
    with torch.no_grad():
        for layer in model:
            if isinstance(layer, nn.BatchNorm2d):
                layer.running_mean.normal_(0, 0.5)  # so that eval() changes the outputs
                layer.running_var.uniform_(0.5, 2.0)
    model.train()  # as it is after training
    batches = make_loader(images=19, seed=_EVALUATE_SEED)  # batches of 8, 8 and 3
    got, seen = run_watched(model, "evaluate", evaluate, model, batches)
    if not seen:
        raise NotYet("evaluate never ran the model on the batches.")
    if any(training for training, _ in seen):
        raise NotYet(
            "the model ran in training mode (Dropout on, BatchNorm using batch statistics): "
            "call model.eval() first, which switches every layer inside it too."
        )
    if any(grad for _, grad in seen):
        raise NotYet(
            "autograd recorded every step of the evaluation: wrap the loop in `with "
            "torch.no_grad():`."
        )
    value = as_number(got, "evaluate", "the accuracy, one number")
    expected = _reference_evaluate(copy.deepcopy(model), batches)
    if abs(value - expected) < 1e-6:
        return (
            "eval mode, no gradients, and every image counted once: the last batch of 3 weighs "
            "3/19."
        )
    model.eval()
    with torch.no_grad():
        per_batch = [(model(x).argmax(1) == y).float().mean().item() for x, y in batches]
    if abs(value - sum(per_batch) / len(per_batch)) < 1e-6:
        raise NotYet(
            f"you return {value:.4f}, the mean of the batches' accuracies; the last batch holds "
            "only 3 images, so count the right answers and the images over all batches, then "
            "divide once."
        )
    if abs(value - expected * 19 / 24) < 1e-6:
        raise NotYet(
            f"you return {value:.4f}: you divided by 3 batches x 8 = 24 images, but the last "
            "batch holds only 3; count len(labels) of each batch."
        )
    if abs(value - expected * 19) < 1e-6:
        raise NotYet(
            f"you return {value:g}, the number of right answers: divide it by the number of "
            "images, 19, for the accuracy."
        )
    if abs(value - expected * 100) < 1e-4:
        raise NotYet(
            f"you return {value:.4g}, a percentage: return the fraction between 0 and 1, "
            f"{expected:.4f}."
        )
    raise NotYet(f"you return {value:.4f}; that is not the accuracy over the 19 images.")


q1 = Exercise(
    "q1: accuracy from logits",
    _check_accuracy,
    hint="""
        logits has one row per image and one column per class. The predicted class is where an
        image's largest logit sits: which dimension is that, 0 or 1? Then compare with labels.
    """,
    solution="""
        def accuracy(logits, labels):
            predictions = logits.argmax(dim=1)
            return (predictions == labels).float().mean().item()
    """,
)

q2 = Exercise(
    "q2: the loop that never learns",
    _check_train_one_epoch,
    hint="""
        Two lines are missing. The model arrives in eval mode, as after an evaluation. And
        PyTorch adds each new gradient to the one already in .grad.
    """,
    solution="""
        def train_one_epoch(model, loader, loss_fn, optimizer):
            model.train()
            for images, labels in loader:
                outputs = model(images)
                loss = loss_fn(outputs, labels)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
    """,
)

q3 = Exercise(
    "q3: an honest evaluation",
    _check_evaluate,
    hint="""
        Three things: model.eval(); `with torch.no_grad():`; and add up the right answers and the
        number of images over all batches, then divide once at the end.
    """,
    solution="""
        def evaluate(model, loader):
            model.eval()
            correct, total = 0, 0
            with torch.no_grad():
                for images, labels in loader:
                    correct += (model(images).argmax(dim=1) == labels).sum().item()
                    total += len(labels)
            return correct / total
    """,
)
