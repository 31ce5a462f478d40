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

from ..i18n import say
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
        value = as_number(
            got, "accuracy", say("one number, the fraction correct", "一个数，即预测正确的比例")
        )
        right = round(expected * len(labels))
        images = f"{len(labels)} image" + ("s" if len(labels) != 1 else "")
        case = say(
            f"for {images} of which {right} {'is' if right == 1 else 'are'} right",
            f"对于 {len(labels)} 张图像（其中 {right} 张预测正确），",
        )
        if abs(value - expected) < 1e-6:
            continue
        if abs(value - expected * len(labels)) < 1e-6 and len(labels) > 1:
            raise NotYet(
                say(
                    f"{case} you return {value:g}, the count; divide by the number of images.",
                    f"{case}你返回了 {value:g}，这是预测正确的个数；请再除以图像的数量。",
                )
            )
        wrong_dim = (
            (logits.argmax(0)[: len(labels)] == labels[: len(logits.argmax(0))]).float().mean()
        )
        if len(labels) == 10 and abs(value - wrong_dim.item()) < 1e-6:
            raise NotYet(
                say(
                    f"{case} you return {value:g}: you took argmax over dim 0, the batch; the "
                    "classes are dim 1.",
                    f"{case}你返回了 {value:g}：你在第 0 维（批量那一维）上取了 argmax；"
                    "类别在第 1 维。",
                )
            )
        raise NotYet(
            say(
                f"{case} you return {value:g}; expected {expected:g}.",
                f"{case}你返回了 {value:g}；应为 {expected:g}。",
            )
        )
    return say(
        "right on batches of 10, 7 and 1 images, as a fraction between 0 and 1.",
        "在 10 张、7 张和 1 张图像的批量上都正确，结果是 0 到 1 之间的比例。",
    )


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
        return say(
            "your loop takes exactly the steps of the correct one: train mode, and fresh "
            "gradients each step.",
            "你的循环与正确的循环走的每一步都完全相同：处于训练模式，并且每一步都用新的梯度。",
        )
    torch.manual_seed(0)
    untouched = make_model()
    if all(
        torch.equal(a, b) for a, b in zip(learner.parameters(), untouched.parameters(), strict=True)
    ):
        raise NotYet(
            say(
                "the weights did not change at all: is optimizer.step() called after "
                "loss.backward(), with nothing clearing the gradients in between?",
                "权重完全没有变化：optimizer.step() 是否在 loss.backward() 之后调用，"
                "并且两者之间没有任何操作清除梯度？",
            )
        )
    mistakes = [
        (
            dict(train=False, zero_grad=False),
            say(
                "the model stays in eval mode (Dropout and BatchNorm behave as at test time) and "
                "gradients add up across steps: call model.train() and optimizer.zero_grad().",
                "模型一直处于 eval 模式（Dropout 和 BatchNorm 的行为与测试时一样），"
                "而且梯度在各步之间不断累加：请调用 model.train() 和 optimizer.zero_grad()。",
            ),
        ),
        (
            dict(train=False),
            say(
                "the model stays in eval mode, so Dropout is off and BatchNorm does not learn its "
                "statistics: call model.train() at the start.",
                "模型一直处于 eval 模式，所以 Dropout 是关闭的，BatchNorm 也不会学习它的统计量："
                "请在开头调用 model.train()。",
            ),
        ),
        (
            dict(zero_grad=False),
            say(
                "the gradients add up across steps, because nothing clears them: call "
                "optimizer.zero_grad() before loss.backward().",
                "梯度在各步之间不断累加，因为没有任何操作清除它们："
                "请在 loss.backward() 之前调用 optimizer.zero_grad()。",
            ),
        ),
    ]
    for options, message in mistakes:
        model, _ = _run_epoch(
            lambda *a, options=options: _reference_epoch(*a, **options), learner=False
        )
        if _same(learner, model):
            raise NotYet(message)
    raise NotYet(
        say(
            "after one epoch your weights differ from those of the correct loop on the same "
            "batches: compare the order of zero_grad, forward, loss, backward and step.",
            "训练一轮之后，你的权重与正确的循环在相同批量上得到的权重不同："
            "请核对 zero_grad、前向传播、计算损失、backward 和 step 的顺序。",
        )
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
        raise NotYet(
            say(
                "evaluate never ran the model on the batches.",
                "evaluate 一次也没有在这些批量上运行模型。",
            )
        )
    if any(training for training, _ in seen):
        raise NotYet(
            say(
                "the model ran in training mode (Dropout on, BatchNorm using batch statistics): "
                "call model.eval() first, which switches every layer inside it too.",
                "模型是在训练模式下运行的（Dropout 开启，BatchNorm 使用当前批量的统计量）："
                "请先调用 model.eval()，它会把模型里的每一层也一起切换过去。",
            )
        )
    if any(grad for _, grad in seen):
        raise NotYet(
            say(
                "autograd recorded every step of the evaluation: wrap the loop in `with "
                "torch.no_grad():`.",
                "autograd 记录了评估的每一步：请把循环放进 `with torch.no_grad():` 里。",
            )
        )
    value = as_number(got, "evaluate", say("the accuracy, one number", "正确率（一个数）"))
    expected = _reference_evaluate(copy.deepcopy(model), batches)
    if abs(value - expected) < 1e-6:
        return say(
            "eval mode, no gradients, and every image counted once: the last batch of 3 weighs "
            "3/19.",
            "eval 模式、不计算梯度、每张图像恰好计一次：最后那个只有 3 张图像的批量只占 3/19。",
        )
    model.eval()
    with torch.no_grad():
        per_batch = [(model(x).argmax(1) == y).float().mean().item() for x, y in batches]
    if abs(value - sum(per_batch) / len(per_batch)) < 1e-6:
        raise NotYet(
            say(
                f"you return {value:.4f}, the mean of the batches' accuracies; the last batch "
                "holds only 3 images, so count the right answers and the images over all "
                "batches, then divide once.",
                f"你返回了 {value:.4f}，这是各个批量正确率的平均值；最后一个批量只有 3 张图像，"
                "所以要在所有批量上统计答对的数量和图像的数量，最后只做一次除法。",
            )
        )
    if abs(value - expected * 19 / 24) < 1e-6:
        raise NotYet(
            say(
                f"you return {value:.4f}: you divided by 3 batches x 8 = 24 images, but the last "
                "batch holds only 3; count len(labels) of each batch.",
                f"你返回了 {value:.4f}：你除以的是 3 个批量 x 8 = 24 张图像，"
                "但最后一个批量只有 3 张；请累加每个批量的 len(labels)。",
            )
        )
    if abs(value - expected * 19) < 1e-6:
        raise NotYet(
            say(
                f"you return {value:g}, the number of right answers: divide it by the number of "
                "images, 19, for the accuracy.",
                f"你返回了 {value:g}，这是答对的数量：再除以图像的数量 19，才是正确率。",
            )
        )
    if abs(value - expected * 100) < 1e-4:
        raise NotYet(
            say(
                f"you return {value:.4g}, a percentage: return the fraction between 0 and 1, "
                f"{expected:.4f}.",
                f"你返回了 {value:.4g}，这是百分数：请返回 0 到 1 之间的比例，即 {expected:.4f}。",
            )
        )
    raise NotYet(
        say(
            f"you return {value:.4f}; that is not the accuracy over the 19 images.",
            f"你返回了 {value:.4f}；这不是这 19 张图像上的正确率。",
        )
    )


q1 = Exercise(
    ("q1: accuracy from logits", "q1：由 logits 计算正确率"),
    _check_accuracy,
    hint=(
        """
        logits has one row per image and one column per class. The predicted class is where an
        image's largest logit sits: which dimension is that, 0 or 1? Then compare with labels.
        """,
        "logits 每张图像占一行、每个类别占一列。预测的类别就是一张图像最大的 logit 所在的位置："
        "那是哪一维，0 还是 1？然后再与 labels 比较。",
    ),
    solution="""
        def accuracy(logits, labels):
            predictions = logits.argmax(dim=1)
            return (predictions == labels).float().mean().item()
        """,
)

q2 = Exercise(
    ("q2: the loop that never learns", "q2：永远学不会的循环"),
    _check_train_one_epoch,
    hint=(
        """
        Two lines are missing. The model arrives in eval mode, as after an evaluation. And
        PyTorch adds each new gradient to the one already in .grad.
        """,
        "缺了两行。传进来的模型处于 eval 模式，就像刚做完一次评估之后那样。"
        "另外，PyTorch 会把每个新的梯度加到 .grad 里已有的梯度上。",
    ),
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
    ("q3: an honest evaluation", "q3：诚实的评估"),
    _check_evaluate,
    hint=(
        """
        Three things: model.eval(); `with torch.no_grad():`; and add up the right answers and the
        number of images over all batches, then divide once at the end.
        """,
        "三件事：model.eval()；`with torch.no_grad():`；"
        "以及在所有批量上累加答对的数量和图像的数量，最后只做一次除法。",
    ),
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
