"""Exercises for lesson 05, inference on your own image: any photo into the network's input,
logits into a class name and a probability, and a classifier that is ready for one image."""

from __future__ import annotations

import copy
from typing import Any

import torch
from PIL import Image
from torch import nn

from ..data import CLASSES
from ..i18n import say
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
        (say("an RGB photo (JPEG)", "一张 RGB 照片（JPEG）"), dog),
        (say("an RGBA photo (a PNG with transparency)", "一张 RGBA 照片（带透明度的 PNG）"), rgba),
        (say("a grayscale photo (mode L)", "一张灰度照片（模式 L）"), dog.convert("L")),
        (
            say("a palette image (mode P, a GIF)", "一张调色板图像（模式 P，即 GIF）"),
            cat.convert("P"),
        ),
    ]


def _check_preprocess(preprocess: Any) -> str:
    for what, image in _photos():
        got = run_learner("preprocess", preprocess, image.copy())
        if not isinstance(got, torch.Tensor):
            raise NotYet(
                say(
                    f"for {what} preprocess returned {type(got).__name__}; return a tensor.",
                    f"对于{what}，preprocess 返回了 {type(got).__name__}；应返回一个张量。",
                )
            )
        expected = TO_INPUT(image.convert("RGB")).unsqueeze(0)
        if got.shape != expected.shape:
            advice = ""
            if got.dim() == 3:
                advice = say(
                    " Add the batch dimension with .unsqueeze(0).",
                    "请用 .unsqueeze(0) 加上批量维度。",
                )
            elif got.dim() == 4 and got.shape[-1] == 3 and got.shape[1] != 3:
                advice = say(
                    " The channels go first, then height and width: ToTensor() does that.",
                    "通道应排在最前，然后是高和宽：ToTensor() 就是这样排的。",
                )
            elif got.dim() == 4 and got.shape[1] != 3:
                advice = say(
                    " Convert the image to RGB first: image.convert('RGB').",
                    "请先把图像转换为 RGB：image.convert('RGB')。",
                )
            elif got.dim() == 4 and got.shape[2:] != (32, 32):
                advice = say(
                    " Resize((32, 32)) squashes to 32x32; Resize(32) only sets the shorter side.",
                    "Resize((32, 32)) 会把图像压扁成 32x32；Resize(32) 只设定较短的那条边。",
                )
            raise NotYet(
                say(
                    f"for {what} your tensor has shape {shape_text(got.shape)}; expected "
                    f"{shape_text(expected.shape)}.{advice}",
                    f"对于{what}，你的张量形状是 {shape_text(got.shape)}；应为 "
                    f"{shape_text(expected.shape)}。{advice}",
                )
            )
        if got.dtype != torch.float32:
            raise NotYet(
                say(
                    f"your tensor holds {got.dtype}; the network's weights are float32, and so "
                    "must its input be: ToTensor() gives float32.",
                    f"你的张量的数据类型是 {got.dtype}；网络的权重是 float32，"
                    "它的输入也必须是 float32：ToTensor() 给出的就是 float32。",
                )
            )
        low, high = got.min().item(), got.max().item()
        if high > 10:
            raise NotYet(
                say(
                    f"your values go up to {high:.0f}; the network was trained on ToTensor's "
                    "0..1, not 0..255.",
                    f"你的值最高到 {high:.0f}；网络训练时用的是 ToTensor 给出的 0..1，"
                    "而不是 0..255。",
                )
            )
        if low < -0.05 or high > 1.5:
            raise NotYet(
                say(
                    f"your values run from {low:.2f} to {high:.2f}; the network was trained on "
                    "ToTensor's 0..1, without Normalize: leave Normalize out.",
                    f"你的值从 {low:.2f} 到 {high:.2f}；网络训练时用的是 ToTensor 给出的 0..1，"
                    "没有经过 Normalize：请去掉 Normalize。",
                )
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
                        say(
                            f"for {what} your values differ from the lesson's by up to "
                            f"{difference:.2f}, though they match for the same photo without "
                            "transparency: image.convert('RGB') drops the alpha channel and "
                            "keeps the colours; do not blend the image onto a background.",
                            f"对于{what}，你的值与本课的最多相差 {difference:.2f}，"
                            "而对去掉透明度的同一张照片却是一致的：image.convert('RGB') "
                            "会丢弃 alpha 通道并保留颜色；不要把图像混合到背景上。",
                        )
                    )
            raise NotYet(
                say(
                    f"for {what} your values differ from the lesson's preprocessing by up to "
                    f"{difference:.2f}: use transforms.Resize((32, 32)) (bilinear, as in lesson "
                    "05; PIL's own resize filters differently) then ToTensor(), nothing else.",
                    f"对于{what}，你的值与本课预处理的结果最多相差 {difference:.2f}："
                    "请先用 transforms.Resize((32, 32))（双线性插值，与第 05 课相同；"
                    "PIL 自己的 resize 用的是另一种滤波），再用 ToTensor()，不要加别的。",
                )
            )
    return say(
        "RGB, RGBA, grayscale and palette images all become a [1, 3, 32, 32] batch in 0..1.",
        "RGB、RGBA、灰度和调色板图像都变成了取值在 0..1 之间的 [1, 3, 32, 32] 批量。",
    )


def _check_top_class(top_class: Any) -> str:
    generator = torch.Generator().manual_seed(7)
    other_names = [f"class {i}" for i in range(10)]  # the names come from the argument
    for names in (list(CLASSES), list(CLASSES), list(CLASSES), other_names):
        logits = torch.randn(1, 10, generator=generator) * 2
        probabilities = logits.softmax(dim=1)[0]
        index = int(probabilities.argmax())
        got = run_learner("top_class", top_class, logits.clone(), list(names))
        if not isinstance(got, tuple | list) or len(got) != 2:
            raise NotYet(
                say(
                    f"top_class returned {short(got)}; return (class name, probability).",
                    f"top_class 返回了 {short(got)}；应返回 (类别名, 概率)。",
                )
            )
        name, probability = got
        if names is other_names and name in CLASSES:
            raise NotYet(
                say(
                    f"given the class names {other_names[0]!r} ... {other_names[-1]!r} you "
                    f"answer {name!r}: take the name from class_names, the argument, not from "
                    "CLASSES.",
                    f"给定的类别名是 {other_names[0]!r} ... {other_names[-1]!r}，你却回答 "
                    f"{name!r}：类别名要从参数 class_names 中取，而不是从 CLASSES 中取。",
                )
            )
        if name != names[index]:
            hint = (
                say(
                    " (index 0 every time: argmax over dim 0 of a [1, 10] tensor)",
                    "（每次都是索引 0：你在 [1, 10] 张量的第 0 维上取了 argmax）",
                )
                if name == names[0]
                else ""
            )
            raise NotYet(
                say(
                    f"you chose {name!r}{hint}; the largest logit is {names[index]!r}, "
                    f"index {index}.",
                    f"你选了 {name!r}{hint}；logit 最大的是 {names[index]!r}，索引为 {index}。",
                )
            )
        value = as_number(
            probability, say("the probability", "top_class（概率部分）"), say("a number", "一个数")
        )
        if abs(value - float(logits[0, index])) < 1e-5:
            raise NotYet(
                say(
                    f"you give {value:.3f} for {name!r}: that is its logit. softmax turns logits "
                    f"into probabilities: {probabilities[index]:.3f}.",
                    f"你给 {name!r} 的是 {value:.3f}：这是它的 logit。softmax 把 logits "
                    f"变成概率：{probabilities[index]:.3f}。",
                )
            )
        if abs(value - 1.0) < 1e-6:
            raise NotYet(
                say(
                    f"you give {name!r} a probability of 1.0: the softmax ran over dim 0, which "
                    "holds one image. Take it over the classes, dim=1.",
                    f"你给 {name!r} 的概率是 1.0：softmax 是在第 0 维上算的，"
                    "而这一维只有一张图像。应在类别所在的维度 dim=1 上计算。",
                )
            )
        if abs(value - float(probabilities[index])) > 1e-5:
            raise NotYet(
                say(
                    f"you give {name!r} a probability of {value:.4f}; softmax gives "
                    f"{probabilities[index]:.4f}.",
                    f"你给 {name!r} 的概率是 {value:.4f}；softmax 给出的是 "
                    f"{probabilities[index]:.4f}。",
                )
            )
    return say(
        "the right class name with its softmax probability, on four sets of logits and two "
        "lists of names.",
        "在四组 logits 和两份类别名列表上，都给出了正确的类别名及其 softmax 概率。",
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
        raise NotYet(
            say(
                "pass your preprocess too: q3.check(classify, preprocess).",
                "把你的 preprocess 也传进来：q3.check(classify, preprocess)。",
            )
        )
    try:
        _check_preprocess(preprocess)
    except NotYet as exc:
        raise NotYet(
            say(
                f"first make preprocess right (exercise 1): {exc}",
                f"先把 preprocess 写对（练习 1）：{exc}",
            )
        ) from None
    photos = example_photos()
    for name, photo in (
        ("ship", say("ship", "船")),  # RGB
        ("bird", say("bird", "鸟")),  # RGB
        ("cat", say("cat", "猫")),  # RGBA
        ("deer", say("deer", "鹿")),  # grayscale
    ):
        with Image.open(photos[name]) as image:
            image = image.copy()
        model = make_model()
        got, seen = run_watched(model, "classify", classify, model, image, preprocess)
        if not seen:
            raise NotYet(say("classify never ran the model.", "classify 根本没有运行模型。"))
        if any(training for training, _ in seen):
            raise NotYet(
                say(
                    "the model ran in training mode, so BatchNorm normalised the one image with "
                    "its own statistics: call model.eval() first, which switches every layer "
                    "inside it too.",
                    "模型是在训练模式下运行的，所以批量规范化（BatchNorm）层用这一张图像自己的"
                    "统计量做了规范化：请先调用 model.eval()，它也会切换模型里面的每一层。",
                )
            )
        if any(grad for _, grad in seen):
            raise NotYet(
                say(
                    "autograd recorded the forward pass: wrap it in `with torch.no_grad():`.",
                    "自动微分（autograd）记录了这次前向传播：请把它放进 "
                    "`with torch.no_grad():` 块中。",
                )
            )
        reference = copy.deepcopy(model).eval()
        with torch.no_grad():
            probabilities = reference(preprocess(image.copy())).softmax(1)[0]
        index = int(probabilities.argmax())
        if not isinstance(got, tuple | list) or len(got) != 2:
            raise NotYet(
                say(
                    f"classify returned {short(got)}; return (class name, probability).",
                    f"classify 返回了 {short(got)}；应返回 (类别名, 概率)。",
                )
            )
        label, probability = got
        value = as_number(
            probability,
            "classify",
            say("the probability as a number", "一个数作为概率"),
        )
        if label != CLASSES[index] or abs(value - float(probabilities[index])) > 1e-4:
            raise NotYet(
                say(
                    f"for the {photo} photo you return ({short(label)}, {value:.4f}); this "
                    f"network in eval mode, given preprocess(image), gives ({CLASSES[index]!r}, "
                    f"{probabilities[index]:.4f}). Does classify run the model on "
                    "preprocess(image), and use top_class?",
                    f"对于那张{photo}的照片，你返回的是 ({short(label)}, {value:.4f})；"
                    f"这个网络在评估模式下，输入 preprocess(image)，给出的是 "
                    f"({CLASSES[index]!r}, {probabilities[index]:.4f})。"
                    "classify 是否在 preprocess(image) 上运行了模型，并用了 top_class？",
                )
            )
    return say(
        "eval mode, no gradients, your preprocess and your top_class: the right answer for four "
        "photos, one image in, one answer out.",
        "评估模式、不计算梯度、你的 preprocess 和你的 top_class：四张照片都得到了正确的答案，"
        "输入一张图像，输出一个答案。",
    )


q1 = Exercise(
    ("q1: any image into the network's input", "q1：把任意图像变成网络的输入"),
    _check_preprocess,
    hint=(
        """
        Whatever the mode, the network wants three colour channels, 32x32 pixels, floats in
        0..1, and a batch dimension in front. Pillow converts between modes; lesson 05's
        transforms do the rest.
        """,
        "不管图像是哪种模式，网络要的都是三个颜色通道、32x32 像素、0..1 之间的浮点数，"
        "并且最前面有一个批量维度。Pillow 可以在模式之间转换；其余的交给第 05 课的 transforms。",
    ),
    solution="""
        to_input = transforms.Compose([transforms.Resize((32, 32)), transforms.ToTensor()])


        def preprocess(image):
            return to_input(image.convert("RGB")).unsqueeze(0)
        """,
)

q2 = Exercise(
    ("q2: from logits to a class name", "q2：从 logits 到类别名"),
    _check_top_class,
    hint=(
        """
        logits has shape [1, 10]: one image, ten classes. Which function turns logits into
        probabilities, and over which of the two dimensions? The index of the largest one
        names the class.
        """,
        "logits 的形状是 [1, 10]：一张图像，十个类别。哪个函数把 logits 变成概率？"
        "又该在两个维度中的哪一个上计算？最大的那个概率的索引就指明了类别。",
    ),
    solution="""
        def top_class(logits, class_names):
            probabilities = logits.softmax(dim=1)[0]
            index = int(probabilities.argmax())
            return class_names[index], probabilities[index].item()
        """,
)

q3 = Exercise(
    ("q3: classify one image", "q3：为一张图像分类"),
    _check_classify,
    hint=(
        """
        Three lines of lesson 05 matter here: the mode a network must be in for inference, the
        block that stops autograd recording, and reusing your preprocess and top_class.
        """,
        "这里要用到第 05 课中的三行：推理时网络必须处于的模式，"
        "让自动微分（autograd）停止记录的代码块，以及复用你的 preprocess 和 top_class。",
    ),
    solution="""
        def classify(model, image, preprocess):
            model.eval()
            with torch.no_grad():
                logits = model(preprocess(image))
            return top_class(logits, CLASSES)
        """,
)
