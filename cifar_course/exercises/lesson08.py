"""Exercises for lesson 08, the speed-run: whitening filters from patches, alternating flips, and
the moving average of the weights.

The patches come from the lesson's own photographs, shipped with the package, so the checks need
no CIFAR-10 download.
"""

from __future__ import annotations

from typing import Any

import torch
from PIL import Image

from ..i18n import say
from ..inference import TO_INPUT, example_photos
from ..models import SpeedNetSmall
from . import Exercise, NotYet, ____, run_learner, shape_text, short

__all__ = ["____", "q1", "q2", "q3", "photo_patches"]


def photo_patches() -> torch.Tensor:
    """Every 2x2 patch of the lesson's photographs at 32x32, as rows of 12 numbers (float64)."""
    rows = []
    for path in example_photos().values():
        with Image.open(path) as image:
            pixels = TO_INPUT(image.convert("RGB")).unsqueeze(0)
        cols = torch.nn.functional.unfold(pixels, 2)  # [1, 12, 31*31]
        rows.append(cols[0].T)
    return torch.cat(rows).double()


def _covariance(rows: torch.Tensor) -> torch.Tensor:
    """The covariance of ``rows``' columns, the rows already centred."""
    return rows.T @ rows / (len(rows) - 1)


def _parallel_rows(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether each row of ``a`` points along the same row of ``b``, up to scale and sign."""
    cosine = (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1) + 1e-30)
    return bool((cosine.abs() > 0.999).all())


def _why_correlated(filters: torch.Tensor, patches: torch.Tensor) -> str:
    """Why the outputs of ``filters`` are still correlated, as advice."""
    if (filters - torch.diag(torch.diag(filters))).abs().max() < 1e-9:
        return say(
            "your filters are a diagonal matrix: each output scales one of the 12 numbers on its "
            "own, so the outputs stay as correlated as neighbouring pixels are. Whitening mixes "
            "them: its filters are the eigenvectors of the covariance (torch.linalg.eigh), each "
            "divided by the square root of its eigenvalue.",
            "你的滤波器是一个对角矩阵：每个输出只是单独缩放 12 个数中的一个，"
            "所以输出之间的相关程度和相邻像素之间一样。白化会把它们混合起来："
            "它的滤波器是协方差的特征向量（torch.linalg.eigh），"
            "每个都除以它的特征值的平方根。",
        )
    vectors = torch.linalg.eigh(_covariance(patches - patches.mean(0))).eigenvectors
    transposed = torch.cov((patches @ filters).T)
    variances = torch.diag(transposed)
    uncorrelated = (transposed - torch.diag(variances)).abs().max() / variances.abs().max() < 1e-4
    if uncorrelated or _parallel_rows(filters, vectors) or _parallel_rows(filters.T, vectors.T):
        return say(
            "the outputs of your filters are still correlated with each other. The eigenvectors "
            "are the columns of what torch.linalg.eigh returns; a filter is one of them, so "
            "transpose.",
            "你的滤波器的输出之间仍然相关。特征向量是 torch.linalg.eigh 返回的矩阵的列；"
            "一个滤波器就是其中的一个特征向量，所以要转置。",
        )
    return say(
        "the outputs of your filters are still correlated with each other: the filters should be "
        "the eigenvectors of the covariance of the centred patches (torch.linalg.eigh), as rows.",
        "你的滤波器的输出之间仍然相关：滤波器应当是中心化之后的图像块的协方差的特征向量"
        "（torch.linalg.eigh），按行排列。",
    )


def _output_covariance(filters: Any, patches: torch.Tensor) -> torch.Tensor:
    if not isinstance(filters, torch.Tensor):
        raise NotYet(
            say(
                f"return the filters as a tensor; you returned {short(filters)}.",
                f"请把滤波器作为张量返回；你返回的是 {short(filters)}。",
            )
        )
    if filters.is_complex():
        raise NotYet(
            say(
                "your filters are complex numbers (torch.linalg.eig gives those): a covariance is "
                "symmetric, and torch.linalg.eigh gives its real eigenvalues and eigenvectors.",
                "你的滤波器是复数（torch.linalg.eig 给出的就是复数）：协方差矩阵是对称的，"
                "torch.linalg.eigh 会给出它的实特征值和特征向量。",
            )
        )
    if filters.dim() == 2 and filters.shape[0] == len(patches):
        raise NotYet(
            say(
                f"your filters have shape {shape_text(filters.shape)}, one row per patch: the "
                "covariance of the 12 numbers is centred.T @ centred, [12, 12]; "
                "centred @ centred.T compares the patches with each other instead.",
                f"你的滤波器形状为 {shape_text(filters.shape)}，每个图像块一行：12 个数的协方差是 "
                "centred.T @ centred，形状为 [12, 12]；而 centred @ centred.T "
                "比较的是图像块彼此之间的关系。",
            )
        )
    if filters.shape != (12, 12):
        raise NotYet(
            say(
                f"your filters have shape {shape_text(filters.shape)}; expected [12, 12]: one row "
                "of 12 weights per filter, 12 filters.",
                f"你的滤波器形状为 {shape_text(filters.shape)}；应为 [12, 12]："
                "12 个滤波器，每个滤波器一行，每行 12 个权重。",
            )
        )
    outputs = patches @ filters.double().T
    return torch.cov(outputs.T)


def _check_whitening(whitening_filters: Any) -> str:
    # every sixth patch, 1,442 of them: enough for the statistics, and small enough that a
    # covariance taken the wrong way round, one row and column per patch, is quick to compute
    patches = photo_patches()[::6]
    eigenvalues = torch.linalg.eigvalsh(_covariance(patches - patches.mean(0)))
    identity = torch.eye(12, dtype=torch.float64)
    got = run_learner("whitening_filters", whitening_filters, patches.clone(), 1e-9)
    c = _output_covariance(got, patches)
    variances = torch.diag(c)
    if (c - identity).abs().max() > 1e-3:
        mean_out = got.double() @ patches.mean(0)
        if (c + torch.outer(mean_out, mean_out) - identity).abs().max() < 1e-2:
            raise NotYet(
                say(
                    "your filters whiten the patches as they are, not their variation around the "
                    "mean patch: subtract patches.mean(0) before computing the covariance.",
                    "你的滤波器白化的是图像块本身，而不是它们围绕平均图像块的变化："
                    "在计算协方差之前先减去 patches.mean(0)。",
                )
            )
        off = (c - torch.diag(variances)).abs().max() / variances.abs().max()
        if off > 1e-4:
            raise NotYet(_why_correlated(got.double(), patches))
        if torch.allclose(variances.sort().values, eigenvalues, rtol=1e-3):
            raise NotYet(
                say(
                    "your outputs are uncorrelated, but their variances are the eigenvalues: "
                    "divide each eigenvector by the square root of its eigenvalue (plus eps).",
                    "你的输出互不相关，但它们的方差就是特征值："
                    "把每个特征向量除以它的特征值（加上 eps）的平方根。",
                )
            )
        if torch.allclose(variances.sort().values, 1 / eigenvalues.flip(0), rtol=1e-2):
            raise NotYet(
                say(
                    "your outputs are uncorrelated, but their variances are 1 / eigenvalue: "
                    "divide by the square root of the eigenvalue, not by the eigenvalue itself.",
                    "你的输出互不相关，但它们的方差是 1 / 特征值："
                    "应除以特征值的平方根，而不是除以特征值本身。",
                )
            )
        own = patches - patches.mean(1, keepdim=True)  # each patch minus its own mean
        values, vectors = torch.linalg.eigh(_covariance(own))
        from_own = vectors.T / torch.sqrt(values.clamp_min(0) + 1e-9)[:, None]
        if _parallel_rows(got.double(), from_own):
            raise NotYet(
                say(
                    "your filters whiten each patch minus its own mean; subtract the mean patch, "
                    "patches.mean(0), the average over all the patches, instead.",
                    "你的滤波器白化的是每个图像块减去它自身均值之后的结果；"
                    "应改为减去平均图像块 patches.mean(0)，即所有图像块的平均。",
                )
            )
        raise NotYet(
            say(
                f"your outputs are uncorrelated, but their variances range from "
                f"{variances.min():.3g} to {variances.max():.3g}; each should be 1.",
                f"你的输出互不相关，但它们的方差在 {variances.min():.3g} 到 "
                f"{variances.max():.3g} 之间；每个都应为 1。",
            )
        )
    eps = 0.01
    got = run_learner("whitening_filters", whitening_filters, patches.clone(), eps)
    # the covariance's eigenvalues: the same for filters in any order or rotated back (ZCA)
    variances = torch.linalg.eigvalsh(_output_covariance(got, patches))
    expected = (eigenvalues / (eigenvalues + eps)).sort().values
    if torch.allclose(variances, torch.ones(12, dtype=torch.float64), atol=1e-3):
        raise NotYet(
            say(
                "with eps=0.01 your outputs still have variance exactly 1: add eps to each "
                "eigenvalue before the square root, so that nearly empty directions are not "
                "blown up.",
                "eps=0.01 时你的输出方差仍然恰好是 1：在开平方之前给每个特征值加上 eps，"
                "这样几乎为空的方向就不会被过度放大。",
            )
        )
    if not torch.allclose(variances, expected, rtol=1e-3, atol=1e-6):
        raise NotYet(
            say(
                "with eps=0.01 the variances of your outputs should be lambda / (lambda + eps), "
                "one for each eigenvalue lambda: divide each eigenvector by sqrt(lambda + eps).",
                "eps=0.01 时，你的输出的方差应当是 lambda / (lambda + eps)，"
                "每个特征值 lambda 对应一个：把每个特征向量除以 sqrt(lambda + eps)。",
            )
        )
    return say(
        "on real photo patches your filters' outputs are uncorrelated with variance 1, and "
        "lambda / (lambda + eps) once eps matters.",
        "在真实照片的图像块上，你的滤波器的输出互不相关，方差为 1；"
        "当 eps 起作用时，方差为 lambda / (lambda + eps)。",
    )


def _check_alternating(flips_for_epoch: Any) -> str:
    base = torch.rand(500, generator=torch.Generator().manual_seed(0)) < 0.5
    original = base.clone()
    seen = []
    for epoch in range(6):  # one tensor for every epoch, as a training loop passes it
        got = run_learner("flips_for_epoch", flips_for_epoch, base, epoch)
        if not torch.equal(base, original):
            raise NotYet(
                say(
                    f"in epoch {epoch} your function changed base itself: the next epoch would "
                    "start from the wrong choice. Return a new tensor (~base), do not flip in "
                    "place.",
                    f"在第 {epoch} 轮，你的函数修改了 base 本身：下一轮会从错误的选择开始。"
                    "请返回一个新张量（~base），不要原地翻转。",
                )
            )
        if not isinstance(got, torch.Tensor) or got.shape != base.shape:
            raise NotYet(
                say(
                    f"return one True/False per image, a tensor of shape [500]; for epoch {epoch} "
                    f"you returned {short(got)}.",
                    f"请为每张图像返回一个 True/False，即形状为 [500] 的张量；"
                    f"对第 {epoch} 轮，你返回的是 {short(got)}。",
                )
            )
        if got.dtype != torch.bool:
            raise NotYet(
                say(
                    f"your result holds {got.dtype}; torch.where needs True/False (torch.bool). "
                    "~base flips a bool tensor; base ^ 1 or base + 1 changes its type.",
                    f"你的结果里装的是 {got.dtype}；torch.where 需要 True/False（torch.bool）。"
                    "~base 会翻转一个布尔张量；base ^ 1 或 base + 1 会改变它的类型。",
                )
            )
        seen.append(got.clone())
    if not torch.equal(seen[0], base):
        raise NotYet(
            say(
                "in epoch 0 mirror exactly the images of the first, random choice: base.",
                "第 0 轮应当恰好翻转第一次随机选出的那些图像：base。",
            )
        )
    for epoch in range(1, 6):
        if torch.equal(seen[epoch], seen[epoch - 1]):
            raise NotYet(
                say(
                    f"epochs {epoch - 1} and {epoch} mirror the same images: each image should "
                    "change side every epoch.",
                    f"第 {epoch - 1} 轮和第 {epoch} 轮翻转的是同样的图像："
                    "每张图像每一轮都应当换一次朝向。",
                )
            )
        if not torch.equal(seen[epoch], ~seen[epoch - 1]):
            changed = int((seen[epoch] != seen[epoch - 1]).sum())
            raise NotYet(
                say(
                    f"from epoch {epoch - 1} to {epoch} only {changed} of 500 images changed "
                    "side; every one should.",
                    f"从第 {epoch - 1} 轮到第 {epoch} 轮，500 张图像中只有 {changed} 张换了朝向；"
                    "每一张都应当换。",
                )
            )
    return say(
        "each image is mirrored in every other epoch, starting from the random first choice.",
        "每张图像隔一轮翻转一次，从第一次的随机选择开始。",
    )


def _check_ema(ema_update: Any) -> str:
    for decay in (0.9, 0.75):  # two decays: one fixed in the code is seen
        _check_ema_once(ema_update, decay)
    return say(
        "every weight and BatchNorm statistic moved 1 - decay of the way towards the model, for "
        "decay 0.9 and 0.75, the counter copied.",
        "decay 为 0.9 和 0.75 时，每个权重和批量规范化的统计量都朝模型移动了 1 - decay 的距离，"
        "计数器则被复制。",
    )


def _check_ema_once(ema_update: Any, decay: float) -> None:
    torch.manual_seed(0)
    model, average = SpeedNetSmall(), SpeedNetSmall()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
        for module in model.modules():  # BatchNorm's running statistics move too
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.add_(torch.randn_like(module.running_mean))
                module.running_var.mul_(2)
                module.num_batches_tracked.fill_(7)
    current = {k: v.clone() for k, v in model.state_dict().items()}
    before = {k: v.clone() for k, v in average.state_dict().items()}
    try:
        run_learner("ema_update", ema_update, average.state_dict(), model.state_dict(), decay)
    except NotYet as exc:
        if "can't be cast" in str(exc.__cause__ or ""):
            raise NotYet(
                say(
                    "ema_update tried to average num_batches_tracked, a counter of integers: an "
                    "integer tensor cannot hold decay * average + (1 - decay) * current. Copy "
                    "the tensors that are not floating point (tensor.is_floating_point() is "
                    "False).",
                    "ema_update 试图对 num_batches_tracked 取平均，而它是一个整数计数器："
                    "整数张量装不下 decay * average + (1 - decay) * current。"
                    "请直接复制不是浮点数的张量（tensor.is_floating_point() 为 False 的那些）。",
                )
            ) from None
        raise
    after = average.state_dict()
    if all(torch.equal(after[k], before[k]) for k in before):
        raise NotYet(
            say(
                "the average model did not change: update its tensors in place (mul_ and add_, "
                "lerp_, or copy_), since state_dict() hands you the model's own tensors.",
                "平均模型没有变化：请原地更新它的张量（mul_ 和 add_、lerp_ 或 copy_），"
                "因为 state_dict() 交给你的就是模型自己的张量。",
            )
        )
    if any(not torch.equal(v, current[k]) for k, v in model.state_dict().items()):
        raise NotYet(
            say(
                "your function changed the trained model: only the average should move.",
                "你的函数修改了正在训练的模型：只有平均值应当变化。",
            )
        )
    name = "layers.1.0.weight"
    swapped = (1 - decay) * before[name] + decay * current[name]
    if torch.allclose(after[name], swapped, atol=1e-6):
        raise NotYet(
            say(
                f"with decay {decay} your average moved {decay:.0%} of the way to the current "
                "weights: decay is the share the average keeps, average = decay * average + "
                "(1 - decay) * current.",
                f"decay 为 {decay} 时，你的平均值朝当前权重移动了 {decay:.0%} 的距离："
                "decay 是平均值保留的份额，average = decay * average + (1 - decay) * current。",
            )
        )
    for key, value in after.items():
        if value.is_floating_point():
            expected = decay * before[key] + (1 - decay) * current[key]
            if not torch.allclose(value, expected, atol=1e-6):
                raise NotYet(
                    say(
                        f"with decay {decay}, {key} is not {decay} * average + "
                        f"{1 - decay:.2g} * current after your update: use the decay you are "
                        "given.",
                        f"decay 为 {decay} 时，经过你的更新，{key} 不等于 {decay} * average + "
                        f"{1 - decay:.2g} * current：请使用传给你的 decay。",
                    )
                )
        elif not torch.equal(value, current[key]):
            raise NotYet(
                say(
                    f"{key} is a counter (integers), not a weight: copy it from the current model "
                    "instead of averaging.",
                    f"{key} 是一个计数器（整数），不是权重：请从当前模型复制它，而不是取平均。",
                )
            )


q1 = Exercise(
    ("q1: whitening filters", "q1：白化滤波器"),
    _check_whitening,
    hint=(
        """
        Four steps: subtract the mean patch; covariance = centred.T @ centred / (len - 1);
        eigenvalues, eigenvectors = torch.linalg.eigh(covariance); each filter is one column of
        eigenvectors divided by the square root of its eigenvalue plus eps. Return them as rows.
        """,
        "四步：减去平均图像块；`covariance = centred.T @ centred / (len - 1)`；"
        "`eigenvalues, eigenvectors = torch.linalg.eigh(covariance)`；"
        "每个滤波器是 `eigenvectors` 的一列，除以它的特征值加上 eps 之后的平方根。"
        "把它们按行返回。",
    ),
    solution="""
        def whitening_filters(patches, eps):
            centred = patches - patches.mean(0)
            covariance = centred.T @ centred / (len(patches) - 1)
            eigenvalues, eigenvectors = torch.linalg.eigh(covariance)
            return eigenvectors.T / torch.sqrt(eigenvalues + eps)[:, None]
        """,
)

q2 = Exercise(
    ("q2: alternating flips", "q2：交替翻转"),
    _check_alternating,
    hint=(
        """
        Epoch 0 uses base as it is; epoch 1 the opposite; epoch 2 base again. What does
        epoch % 2 tell you, and what does ~ do to a tensor of True/False?
        """,
        "第 0 轮原样使用 `base`；第 1 轮用它的反面；第 2 轮又用 `base`。"
        "`epoch % 2` 能告诉你什么？`~` 对一个由 True/False 组成的张量做了什么？",
    ),
    solution="""
        def flips_for_epoch(base, epoch):
            return base if epoch % 2 == 0 else ~base
        """,
)

q3 = Exercise(
    ("q3: the moving average of the weights", "q3：权重的移动平均"),
    _check_ema,
    hint=(
        """
        Loop over average.items(). For a floating-point tensor (tensor.is_floating_point()),
        move it in place: tensor.mul_(decay).add_(current[name], alpha=1 - decay). Anything else
        (BatchNorm's batch counter) is copied with copy_.
        """,
        "遍历 `average.items()`。对浮点张量（`tensor.is_floating_point()`），原地移动它："
        "`tensor.mul_(decay).add_(current[name], alpha=1 - decay)`。"
        "其余的（批量规范化的批量计数器）用 `copy_` 复制。",
    ),
    solution="""
        @torch.no_grad()
        def ema_update(average, current, decay):
            for name, tensor in average.items():
                if tensor.is_floating_point():
                    tensor.mul_(decay).add_(current[name], alpha=1 - decay)
                else:
                    tensor.copy_(current[name])
        """,
)
