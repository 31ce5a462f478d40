"""The speed-run recipe (lesson 08): whitening, the weight averages, alternating flips, the run."""

import re
from pathlib import Path

import pytest
import torch
from torch import nn

from cifar_course import precision
from cifar_course.augment import alternating_flip, draw_shifts
from cifar_course.checkpoints import load_model
from cifar_course.cli import main
from cifar_course.data import TensorData
from cifar_course.engine import RunConfig, fit
from cifar_course.errors import CourseError
from cifar_course.models import SpeedNet, SpeedNetSmall, build_model, count_parameters
from cifar_course.recipes import speedrun
from cifar_course.recipes.speedrun import (
    EMA,
    Lookahead,
    Speedrun,
    SpeedrunHyper,
    init_whitening,
    lookahead_decay,
    whitening_filters,
)

CAT = Path(__file__).resolve().parents[1] / "cifar_course" / "images" / "cat.png"


@pytest.fixture(scope="module")
def images(data_root):
    """2,000 real training images in [0, 1]: the first half to fit on, the second to check on."""
    return TensorData(True).batch(torch.arange(2000))[0]


def covariance(outputs: torch.Tensor) -> torch.Tensor:
    """Covariance of the channels of ``[N, C, H, W]`` over every image and position."""
    rows = outputs.permute(0, 2, 3, 1).reshape(-1, outputs.shape[1]).double()
    return torch.cov(rows.T)


def test_the_networks_shapes_and_sizes():
    for cls, size in ((SpeedNet, 1_971_352), (SpeedNetSmall, 497_240)):
        model = cls().eval()
        assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)
        assert count_parameters(model) == size  # the whitening weights and BN scales are frozen
        assert type(build_model("speed_net" if cls is SpeedNet else "speed_net_small")) is cls


def test_whitening_filters_make_the_patches_covariance_the_identity(images):
    normalize = SpeedNetSmall().normalize
    fit, held_out = normalize(images[:1000]), normalize(images[1000:])
    raw = covariance(nn.functional.unfold(held_out, 2).view(1000, 12, 31, 31))
    assert torch.linalg.eigvalsh(raw).max() > 5  # real patches are far from white
    filters = whitening_filters(fit, eps=1e-8)
    assert filters.shape == (12, 3, 2, 2)
    identity = torch.eye(12, dtype=torch.float64)
    on_fit = covariance(nn.functional.conv2d(fit, filters))
    assert (on_fit - identity).abs().max() < 1e-3
    # on images the filters never saw, still close: within 0.15 (0.07 measured)
    on_new = covariance(nn.functional.conv2d(held_out, filters))
    assert (on_new - identity).abs().max() < 0.15
    # with the recipe's eps, the variance along a direction of variance lambda is
    # lambda / (lambda + eps), largest first
    rows = nn.functional.unfold(fit, 2).transpose(1, 2).reshape(-1, 12).double()
    eigenvalues = torch.linalg.eigvalsh(torch.cov(rows.T)).flip(0)
    variances = torch.diag(covariance(nn.functional.conv2d(fit, whitening_filters(fit))))
    expected = eigenvalues / (eigenvalues + speedrun.WHITEN_EPS)
    assert torch.allclose(variances, expected, atol=2e-3)
    assert expected.min() < 0.9  # eps matters for the smallest directions of real patches


def test_the_first_layer_of_the_network_whitens_real_patches(images):
    model = SpeedNetSmall()
    init_whitening(model, images[:1000])
    with torch.no_grad():
        out = model.whiten(model.normalize(images[1000:]))
    first, second = out[:, :12], out[:, 12:]
    assert torch.equal(model.whiten.weight[12:], -model.whiten.weight[:12])
    assert torch.allclose(second, -first, atol=1e-5)
    c = covariance(first)
    off_diagonal = c - torch.diag(torch.diag(c))
    assert off_diagonal.abs().max() < 0.05  # uncorrelated
    # unit variance, less where eps dominates the smallest eigenvalues: lambda / (lambda + eps)
    assert torch.all(torch.diag(c) > 0.5) and torch.all(torch.diag(c) < 1.1)
    assert not model.whiten.weight.requires_grad


def test_the_whitening_bias_centres_the_outputs(images):
    model = SpeedNetSmall()
    brighter = images[:1000] * 0.5 + 0.3  # a data set whose mean patch is far from 0
    init_whitening(model, brighter)
    with torch.no_grad():
        centred = model.whiten(model.normalize(brighter)).mean(dim=(0, 2, 3))
        model.whiten.bias.zero_()
        uncentred = model.whiten(model.normalize(brighter)).mean(dim=(0, 2, 3))
    assert centred.abs().max() < 1e-3
    assert uncentred.abs().max() > 0.5


def test_the_optimizer_groups_and_the_whitening_bias_freeze():
    model = SpeedNetSmall()
    optimizer = speedrun.make_optimizer(model, lr=0.75, batch_size=512)
    weights, norms, bias = optimizer.param_groups
    named = dict(model.named_parameters())
    assert {id(p) for p in weights["params"]} == {
        id(p) for n, p in named.items() if p.ndim > 1 and n != "whiten.weight"
    }
    assert all(p.ndim == 1 and p.requires_grad for p in norms["params"])  # BatchNorm shifts
    assert len(norms["params"]) == 6 and bias["weight_decay"] == 0
    assert bias["params"] == [model.whiten.bias]
    assert not any(p is model.whiten.weight for g in optimizer.param_groups for p in g["params"])
    assert all(g["nesterov"] and g["momentum"] == 0.85 for g in optimizer.param_groups)
    speedrun.set_lr(optimizer, 0.5, epoch=speedrun.WHITEN_BIAS_EPOCHS - 1)
    assert [g["lr"] for g in optimizer.param_groups] == [0.5, 0.5 * 64, 0.5]
    speedrun.set_lr(optimizer, 0.5, epoch=speedrun.WHITEN_BIAS_EPOCHS)
    assert [g["lr"] for g in optimizer.param_groups] == [0.5, 0.5 * 64, 0.0]


@pytest.mark.parametrize("lr", [0.75, 0.1])
def test_weight_decay_is_decoupled_from_the_learning_rate(lr):
    """With no gradient, one step at the peak rate shrinks the weights and the BatchNorm biases by
    the same factor whatever the learning rate and the biases' faster rate."""
    torch.manual_seed(0)
    model = SpeedNetSmall()
    for bn in model.modules():
        if isinstance(bn, nn.BatchNorm2d):
            nn.init.normal_(bn.bias)
    optimizer = speedrun.make_optimizer(model, lr=lr, batch_size=512)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    sum(p.sum() * 0 for p in model.parameters()).backward()  # gradients of exactly 0
    speedrun.set_lr(optimizer, lr, epoch=0)
    optimizer.step()
    # Nesterov's first step moves by (1 + momentum) times the gradient, decay included.
    factor = 1 - (1 + speedrun.MOMENTUM) * speedrun.WEIGHT_DECAY * 512
    for name, p in model.named_parameters():
        if name in ("whiten.bias", "whiten.weight") or not p.requires_grad:
            assert torch.equal(p, before[name]), name
        else:
            assert torch.allclose(p, before[name] * factor, rtol=1e-5, atol=0), name
    assert 0.99 < factor < 0.999  # about 0.2 % per step: it can be told from no decay


def test_the_schedule_rises_from_a_fifth_and_ends_above_zero():
    lrs = [speedrun.schedule(step, 100, 2.0) for step in range(101)]
    assert lrs[0] == pytest.approx(0.4) and lrs[23] == 2.0 and lrs[100] == pytest.approx(0.14)
    assert lrs == sorted(lrs[:24]) + sorted(lrs[24:], reverse=True)


def test_identity_initialization_passes_the_input_through():
    torch.manual_seed(0)
    model = SpeedNetSmall()
    speedrun.init_identity(model)
    convs = [m for m in model.layers.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 6
    with torch.no_grad():
        for conv in convs:
            c_in, c_out = conv.in_channels, conv.out_channels
            x = torch.randn(2, c_in, 9, 9)
            y = conv(x)
            assert torch.allclose(y[:, :c_in], x, atol=1e-6)  # the first c_in filters copy
            if c_out > c_in:  # the others keep their random start
                assert conv.weight[c_in:].abs().sum() > 0 and not torch.allclose(
                    y[:, c_in:], 0 * y[:, c_in:]
                )
    assert not torch.allclose(SpeedNetSmall().layers[1][0].weight[:24], convs[0].weight[:24])


def test_ema_is_the_exponential_moving_average_it_claims():
    torch.manual_seed(0)
    model = SpeedNetSmall()
    ema = EMA(model, decay=0.9)
    start = {k: v.clone() for k, v in ema.model.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
        model.layers[1][2].running_var.mul_(3)
        model.layers[1][2].num_batches_tracked += 7
    current = {k: v.clone() for k, v in model.state_dict().items()}
    ema.update(model)
    for name, value in ema.model.state_dict().items():
        if value.is_floating_point():
            expected = 0.9 * start[name] + 0.1 * current[name]
            assert torch.allclose(value, expected, atol=1e-6), name
        else:
            assert torch.equal(value, current[name]), name
    assert torch.equal(model.state_dict()["whiten.weight"], current["whiten.weight"])  # untouched
    ema.update(model, decay=0.0)  # 0 copies
    assert all(torch.equal(v, current[k]) for k, v in ema.model.state_dict().items())
    assert not any(p.requires_grad for p in ema.model.parameters())
    with pytest.raises(ValueError, match="decay"):
        EMA(model, decay=1.0)


def test_lookahead_pulls_the_weights_back_to_the_slow_average():
    torch.manual_seed(0)
    model = SpeedNetSmall()
    lookahead = Lookahead(model)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
        model.layers[1][2].running_var.mul_(3)
        model.layers[1][2].num_batches_tracked += 7
    moved = {k: v.clone() for k, v in model.state_dict().items()}
    lookahead.update(model, decay=0.75)
    for name, value in model.state_dict().items():
        if value.is_floating_point():
            expected = 0.75 * start[name] + 0.25 * moved[name]
            assert torch.allclose(value, expected, atol=1e-6), name  # the live weights moved back
            assert torch.equal(lookahead.slow[name], value), name
        else:
            assert torch.equal(value, moved[name]), name  # the batch counter is left alone
    assert model.layers[1][0].weight.requires_grad  # still the same, trainable parameters
    with torch.no_grad():
        model.layers[1][0].weight.add_(1.0)
    after = {k: v.clone() for k, v in model.state_dict().items()}
    lookahead.update(model, decay=0.0)  # 0: the slow weights become the live ones, unchanged
    assert all(torch.equal(v, after[k]) for k, v in model.state_dict().items())
    assert all(torch.equal(v, after[k]) for k, v in lookahead.slow.items())
    with pytest.raises(ValueError, match="decay"):
        lookahead.update(model, decay=1.5)


def test_the_lookahead_grows_stronger_towards_the_end():
    total = 1000
    decays = [lookahead_decay(step, total) for step in range(0, total + 1, 5)]
    assert decays[0] == 0 and decays[-1] == pytest.approx(0.95**5)
    assert all(a < b for a, b in zip(decays, decays[1:], strict=False))
    assert lookahead_decay(total // 2, total) == pytest.approx(0.95**5 / 8)  # cubic


class Built(Speedrun):
    """The recipe, keeping the networks it builds (``SpeedNetSmall`` on any device) in
    ``models``."""

    models: list[SpeedNetSmall]

    def build_model(self) -> SpeedNetSmall:
        self.models.append(SpeedNetSmall())
        return self.models[-1]


@pytest.fixture
def built() -> type[Built]:
    """A ``Built`` recipe of this test's own: the networks it builds, in order, in ``models``."""
    return type("Built", (Built,), {"models": []})


RUN_FIELDS = {"device", "resume", "init_from", "overwrite", "seed"}


def short_run(
    tmp_path: Path,
    batch_size: int,
    epochs: int = 2,
    recipe: type[Speedrun] = Speedrun,
    on_epoch=None,
    **settings: bool | str,
) -> list[str]:
    """Train the recipe for a few epochs on the slice at lr 0.05 into ``tmp_path/o``; its log
    lines. ``settings``: the run's (``RUN_FIELDS``) or the recipe's. On the CPU unless said:
    bit-for-bit comparisons, and the small network's checkpoint names."""
    run = {k: settings.pop(k) for k in RUN_FIELDS & settings.keys()}
    run.setdefault("device", "cpu")
    config = RunConfig(out=str(tmp_path / "o"), logdir=str(tmp_path / "l"), **run)
    hyper = SpeedrunHyper(epochs=epochs, batch_size=batch_size, lr=0.05, **settings)
    lines: list[str] = []
    fit(recipe, config, hyper, log=lines.append, on_epoch=on_epoch)
    return lines


@pytest.mark.slow
def test_the_whitening_bias_stops_learning_and_leaves_the_backward_pass(built, tmp_path):
    """From epoch WHITEN_BIAS_EPOCHS on the bias stays where it is, and on one process it no
    longer asks for a gradient, so that backpropagation stops before the whitening layer."""
    epochs = speedrun.WHITEN_BIAS_EPOCHS + 1
    short_run(tmp_path, batch_size=500, epochs=epochs, recipe=built, lookahead=False)
    bias = [
        torch.load(tmp_path / "o" / f"speed_net_small_epoch{e:02d}.pt", weights_only=True)["model"][
            "whiten.bias"
        ]
        for e in range(epochs - 2, epochs + 1)
    ]
    assert not torch.equal(bias[0], bias[1])  # it learned in the last epoch before the freeze
    assert torch.equal(bias[1], bias[2])  # and not after it
    model = built.models[0]
    assert not model.whiten.bias.requires_grad and model.whiten.bias.grad is None


@pytest.mark.slow
@pytest.mark.parametrize("lookahead", [True, False])
def test_the_run_updates_the_lookahead_every_five_steps_and_ends_on_it(tmp_path, lookahead):
    updates = []

    class Recorded(Lookahead):
        def update(self, model, decay):
            super().update(model, decay)
            updates.append((decay, {k: v.clone() for k, v in self.slow.items()}))

    class Watched(Speedrun):
        lookahead_type = Recorded

    lines = short_run(tmp_path, batch_size=300, recipe=Watched, lookahead=lookahead)
    assert ("no lookahead" in lines[0]) is not lookahead and "lookahead" in lines[0]
    if not lookahead:
        assert updates == []
        return
    total = 2 * -(-len(TensorData(True)) // 300)
    assert total % 5  # so that the last step's extra update is tested too
    steps = [*range(5, total, 5), total]
    assert [decay for decay, _ in updates] == pytest.approx(
        [lookahead_decay(step, total) for step in steps]
    )
    saved = torch.load(tmp_path / "o" / "speed_net_small_epoch02.pt", weights_only=True)["model"]
    last_slow = updates[-1][1]
    assert all(torch.equal(saved[k], v) for k, v in last_slow.items())  # ends on the slow weights


def test_alternating_flip_flips_every_image_every_other_epoch():
    base = torch.rand(1000, generator=torch.Generator().manual_seed(0)) < 0.5
    epochs = torch.stack([alternating_flip(base, e) for e in range(6)])
    assert torch.all(epochs[1:] != epochs[:-1])  # every image changes side every epoch
    assert torch.equal(epochs[0], base) and torch.equal(epochs[2], base)
    assert 400 < int(base.sum()) < 600


@pytest.mark.slow
def test_the_training_run_shows_each_image_mirrored_in_alternate_epochs(images, tmp_path):
    """Record what the network is fed in a real run (the translation switched off) and find each
    image again, as itself or as its mirror image."""
    train = TensorData(True)
    key = {}

    def pixels(image: torch.Tensor) -> bytes:
        # The stored bytes, not the floats: a CUDA GPU divides by 255 as a multiplication by
        # 1/255, which differs from the CPU's division in the last bit for 126 of the 256 values.
        return (image.cpu() * 255).round().to(torch.uint8).contiguous().numpy().tobytes()

    for i in range(len(train)):
        image = train.batch(torch.tensor([i], device=train.device))[0][0]
        key[pixels(image)] = (i, False)
        key[pixels(image.flip(2))] = (i, True)
    seen: list[dict[int, bool]] = []

    def record(module, args):
        if module.training:
            for image in args[0]:
                index, flipped = key[pixels(image)]
                seen[-1][index] = flipped

    live = []

    class Unshifted(Speedrun):
        """Flips, but no shifts; a hook that sees what the network is fed in training."""

        def build_model(self):
            model = SpeedNetSmall()
            model.register_forward_pre_hook(record)
            live.append(model)
            return model

        def augment(self, images, idx, flip_now, generator, shifts):
            return torch.where(flip_now[idx].view(-1, 1, 1, 1), images.flip(3), images)

    seen.append({})
    short_run(
        tmp_path,
        batch_size=500,
        epochs=3,
        recipe=Unshifted,
        on_epoch=lambda recipe, row: seen.append({}),  # after each epoch: the next one begins
        ema=True,
    )
    epochs = seen[:3]
    assert all(len(e) == len(train) for e in epochs)  # every image once per epoch
    for before, after in zip(epochs, epochs[1:], strict=False):
        assert all(after[i] != before[i] for i in before)
    assert 0.4 < sum(epochs[0].values()) / len(train) < 0.6
    # the checkpoint holds the weight average, not the last weights
    saved = torch.load(tmp_path / "o" / "speed_net_small_epoch03.pt", weights_only=True)["model"]
    weight = "layers.3.4.weight"
    assert not torch.allclose(saved[weight], live[0].state_dict()[weight].cpu())


@pytest.mark.slow
@pytest.mark.parametrize("ema", [False, True])
def test_without_the_ema_the_last_weights_are_tested_and_saved(built, tmp_path, ema):
    live, tested = built.models, []
    lines = short_run(
        tmp_path,
        batch_size=500,
        recipe=built,
        on_epoch=lambda recipe, row: tested.append(recipe.tested),
        ema=ema,
    )
    assert ("no weight EMA" in lines[0]) is not ema and "weight EMA" in lines[0]
    assert (tested[-1] is live[0]) is not ema  # the EMA tests its own copy of the network
    saved = torch.load(tmp_path / "o" / "speed_net_small_epoch02.pt", weights_only=True)["model"]
    same = all(torch.equal(saved[k], v.cpu()) for k, v in live[0].state_dict().items())
    assert same is not ema


class Probed(Speedrun):
    """The recipe with a stand-in probe, whose speed-up is ``speedup`` (None: any probe fails the
    test), and with the dtypes that the first convolution after the whitening layer computes in
    gathered in ``dtypes``."""

    speedup: float | None = None
    dtypes: set[torch.dtype]

    def build_model(self):
        model = SpeedNetSmall()
        model.layers[1][0].register_forward_hook(lambda m, i, out: self.dtypes.add(out.dtype))
        return model

    def probe_bf16(self) -> float:
        if self.speedup is None:
            pytest.fail("probed")
        return self.speedup


@pytest.fixture
def probed() -> type[Probed]:
    """A ``Probed`` recipe of this test's own."""
    return type("Probed", (Probed,), {"dtypes": set()})


@pytest.mark.slow
@pytest.mark.parametrize(("native", "speedup", "chosen"), [(True, 1.7, True), (True, 0.5, False)])
def test_a_cpu_trains_in_bf16_only_where_the_probe_finds_it_faster(
    monkeypatch, tmp_path, probed, native, speedup, chosen
):
    """The probe's verdict decides the precision of the steps themselves, and the log says so."""
    monkeypatch.setattr(
        torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: native, raising=False
    )
    probed.speedup = speedup
    dtypes = probed.dtypes
    lines = short_run(tmp_path, batch_size=500, epochs=1, recipe=probed)
    words = "bf16 autocast" if chosen else "fp32"
    assert f"{words} (bf16 probe, {speedup:.2f}x fp32)" in lines[0]
    # the first convolution after the whitening layer, in training and in testing alike
    assert dtypes == ({torch.bfloat16} if chosen else {torch.float32})
    saved = torch.load(tmp_path / "o" / "speed_net_small_epoch01.pt", weights_only=True)
    assert saved["bf16"] is chosen

    # A resumed run keeps the precision it was trained in, whatever a new probe would say.
    probed.speedup = 2.2 - speedup  # the other verdict
    dtypes.clear()
    first = tmp_path / "o" / "speed_net_small_epoch01.pt"
    lines = short_run(tmp_path / "r", batch_size=500, epochs=2, recipe=probed, resume=str(first))
    assert any(f"{words}, as the run it resumes" in line for line in lines[:2])
    assert (torch.bfloat16 in dtypes) is chosen


@pytest.mark.parametrize("mkldnn", [True, False])
def test_without_bf16_in_onednn_a_cpu_trains_in_fp32_without_probing(monkeypatch, mkldnn):
    """Neither a CPU whose oneDNN has no bf16 nor a PyTorch built without oneDNN (where the
    bf16 query itself does not exist) is probed."""
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: mkldnn)
    monkeypatch.setattr(
        torch.ops.mkldnn,
        "_is_mkldnn_bf16_supported",
        lambda: False if mkldnn else pytest.fail("asked a build without oneDNN"),
        raising=False,
    )
    speedrun.cpu_bf16_speedup.cache_clear()
    assert not speedrun.uses_bf16(torch.device("cpu"), 512)
    cpu = torch.device("cpu")
    assert precision.choose_bf16(cpu, None, "auto", lambda: speedrun.cpu_speedup(512)) == (
        False,
        "fp32 (this CPU has no bf16)",
    )
    assert speedrun.cpu_bf16_speedup.cache_info().misses == 0  # never probed
    resumed = precision.choose_bf16(cpu, {"bf16": True}, "auto", lambda: pytest.fail("probed"))
    assert resumed == (False, "fp32 (the resumed run trained in bf16, which this CPU cannot run)")


@pytest.mark.slow
@pytest.mark.parametrize(("precision", "speedup"), [("fp32", 1.7), ("bf16", 0.5)])
def test_precision_given_overrules_the_probe_and_is_kept_on_resume(
    monkeypatch, tmp_path, probed, precision, speedup
):
    """--precision trains in the precision asked for, where the probe (not run) would choose the
    other one; resuming with the other --precision is refused, and the saved files stay."""
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True, raising=False)
    dtypes = probed.dtypes  # and its probe, if it ran, would fail the test
    lines = short_run(tmp_path, batch_size=500, epochs=1, recipe=probed, precision=precision)
    bf16 = precision == "bf16"
    assert f"{'bf16 autocast' if bf16 else 'fp32'} (--precision {precision})" in lines[0]
    assert (torch.bfloat16 in dtypes) is bf16
    first = tmp_path / "o" / "speed_net_small_epoch01.pt"
    assert torch.load(first, weights_only=True)["bf16"] is bf16
    events = sorted((tmp_path / "l").iterdir())
    other = "fp32" if bf16 else "bf16"
    goes_on = f"--precision {other}: the run being resumed goes on in {precision}"
    with pytest.raises(CourseError, match=goes_on):
        short_run(
            tmp_path, batch_size=500, epochs=2, recipe=probed, resume=str(first), precision=other
        )
    assert sorted((tmp_path / "l").iterdir()) == events  # TensorBoard's log: no new events file
    assert not (tmp_path / "o" / "speed_net_small_epoch02.pt").exists()


@pytest.mark.parametrize("mkldnn", [True, False])
def test_bf16_asked_for_where_onednn_has_none_is_refused_before_anything_is_replaced(
    monkeypatch, tmp_path, mkldnn
):
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: mkldnn)
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False, raising=False)
    (tmp_path / "l").mkdir()
    earlier = tmp_path / "l" / "events.out.tfevents.1"  # what --overwrite would remove
    earlier.write_bytes(b"an earlier run's TensorBoard events")
    with pytest.raises(CourseError, match="--precision bf16: PyTorch's oneDNN has no bf16"):
        short_run(tmp_path, batch_size=500, epochs=1, precision="bf16", overwrite=True)
    assert earlier.read_bytes() == b"an earlier run's TensorBoard events"
    with pytest.raises(CourseError, match="CPU or a CUDA GPU only, not on mps"):
        precision.check_precision(torch.device("mps"), None, "bf16")
    precision.check_precision(torch.device("mps"), None, "fp32")  # fp32 runs anywhere
    with pytest.raises(CourseError, match="speedrun precision = 'fp16': it must be one of"):
        SpeedrunHyper(precision="fp16").resolved("cpu").validate()


def test_bf16_is_refused_on_gpus_before_ampere_and_a_resumed_run_keeps_its_precision(
    monkeypatch,
):
    cuda = torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla T4")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))
    with pytest.raises(CourseError, match=r"Tesla T4 \(compute capability 7.5\) has no native"):
        precision.check_precision(cuda, None, "bf16")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    precision.check_precision(cuda, None, "bf16")
    # A bf16 run resumed on a CPU without bf16 goes on in fp32: --precision fp32 agrees with
    # that, --precision bf16 does not.
    cpu = torch.device("cpu")
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: False)
    precision.check_precision(cpu, {"bf16": True}, "fp32")
    with pytest.raises(CourseError, match=r"goes on in fp32 \(it trained in bf16, which this"):
        precision.check_precision(cpu, {"bf16": True}, "bf16")
    assert precision.choose_bf16(cpu, {"bf16": True}, "fp32", lambda: 2.0)[0] is False


def test_the_bf16_probe_times_both_precisions_and_leaves_the_random_state_alone(monkeypatch):
    state = torch.random.get_rng_state()
    steps = []
    real = nn.functional.cross_entropy

    def counted(logits, targets):
        steps.append(logits.dtype)
        return real(logits, targets)

    monkeypatch.setattr(nn.functional, "cross_entropy", counted)
    ratio = speedrun.cpu_bf16_speedup.__wrapped__(16, steps=2)
    assert 0.01 < ratio < 100
    assert steps == [torch.float32, torch.bfloat16] * 3  # a warm-up step each, then 2 timed each
    assert torch.equal(torch.random.get_rng_state(), state)


@pytest.mark.slow
def test_a_resumed_run_goes_on_exactly_as_if_it_had_never_stopped(tmp_path):
    """The checkpoints hold the lookahead's slow weights: resuming from epoch 1 of a 2-epoch run
    gives its epoch 2 bit for bit. Without them (a checkpoint of a run without lookahead) the
    slow weights start from the live ones, and epoch 2 comes out different."""
    # 7 steps per epoch: epoch 1 ends 2 steps after an update, so the saved slow weights are
    # neither the live ones nor the first ones
    short_run(tmp_path / "a", batch_size=300)
    first = tmp_path / "a" / "o" / "speed_net_small_epoch01.pt"
    short_run(tmp_path / "b", batch_size=300, resume=str(first))
    state = torch.load(first, weights_only=True)
    del state["lookahead"]
    torch.save(state, tmp_path / "without.pt")
    lines = short_run(tmp_path / "c", batch_size=300, resume=str(tmp_path / "without.pt"))
    assert "the checkpoint holds no lookahead weights: they start from its weights" in lines

    def epoch2(run):
        path = tmp_path / run / "o" / "speed_net_small_epoch02.pt"
        return torch.load(path, weights_only=True)

    straight, resumed, approximate = epoch2("a"), epoch2("b"), epoch2("c")
    for key in ("model", "lookahead"):
        assert straight[key].keys() == resumed[key].keys()
        assert all(torch.equal(v, resumed[key][k]) for k, v in straight[key].items()), key
    assert not all(torch.equal(v, approximate["model"][k]) for k, v in straight["model"].items())


@pytest.mark.slow
def test_resuming_keeps_the_decay_decoupled_and_refuses_the_older_recipe(tmp_path, capsys):
    args = ["train", "--recipe", "speedrun", "--batch-size", "500", "--device", "cpu"]
    args += ["--logdir", str(tmp_path / "tb")]
    assert main([*args, "--epochs", "1", "--lr", "0.05", "--out", str(tmp_path / "a")]) == 0
    first = tmp_path / "a" / "speed_net_small_epoch01.pt"
    more = ["--epochs", "2", "--lr", "0.1", "--out", str(tmp_path / "b")]
    assert main([*args, *more, "--resume", str(first)]) == 0
    groups = torch.load(tmp_path / "b" / "speed_net_small_epoch02.pt", weights_only=True)[
        "optimizer"
    ]["param_groups"]
    decay = speedrun.WEIGHT_DECAY * 500
    assert groups[0]["weight_decay"] == pytest.approx(decay / 0.1)  # this run's --lr, not 0.05
    assert groups[1]["weight_decay"] == pytest.approx(decay / (0.1 * speedrun.BIAS_LR_SCALE))

    state = torch.load(first, weights_only=True)
    for group in state["optimizer"]["param_groups"]:
        del group["lr_scale"]  # as the recipe of commit 00ce111 saved its checkpoints
    older = tmp_path / "older.pt"
    torch.save(state, older)
    capsys.readouterr()
    more[-1] = str(tmp_path / "c")
    assert main([*args, *more, "--resume", str(older)]) == 1
    err = capsys.readouterr().err.strip()
    assert "before 2026-11-28" in err and f"--init-from '{older}'" in err
    assert len(err.splitlines()) == 1 and not (tmp_path / "c").exists()


@pytest.mark.slow
def test_the_recipe_beats_the_lecture_net_on_the_slice(data_root, tmp_path, capsys):
    common = ["--epochs", "4", "--batch-size", "64", "--device", "cpu"]
    lecture = ["train", *common, "--out", str(tmp_path / "l"), "--logdir", str(tmp_path / "tl")]
    assert main(lecture) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    baseline = float(re.search(r"(\d+\.\d+)%", lines[-1])[1])
    out = tmp_path / "ck"
    args = ["train", "--recipe", "speedrun", *common, "--lr", "0.05"]
    assert main([*args, "--out", str(out), "--logdir", str(tmp_path / "tb")]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("training speed_net_small (widths 32/128/128) on cpu: 4 epochs")
    assert lines[-1].startswith("final test accuracy:") and "flip-and-shift TTA" in lines[-1]
    accuracy = float(lines[-1].split()[3].rstrip("%"))
    assert accuracy > baseline + 5, (accuracy, baseline)

    checkpoint = out / "speed_net_small_epoch04.pt"
    assert isinstance(load_model(checkpoint), SpeedNetSmall)
    assert main(["evaluate", "--checkpoint", str(checkpoint), "--tta", "--batch-size", "1000"]) == 0
    evaluated = capsys.readouterr()
    reloaded = float(re.search(r"(\d+\.\d+)% \(flip-and-shift\)", evaluated.out)[1])
    assert abs(reloaded - accuracy) <= 0.1  # the checkpoint holds the weights that were tested
    # tested as the run tested it: in bf16 where the run trained in bf16 (the probe's choice)
    bf16 = torch.load(checkpoint, weights_only=True)["bf16"]
    assert ("testing in bf16 autocast" in evaluated.err) is bf16
    assert main(["predict", "--checkpoint", str(checkpoint), str(CAT)]) == 0
    assert str(CAT) in capsys.readouterr().out
    exported = tmp_path / "speed.pt"
    assert main(["export", str(checkpoint), str(exported)]) == 0
    assert isinstance(load_model(exported), SpeedNetSmall)


@pytest.mark.slow
def test_shifts_drawn_per_epoch_are_the_ones_drawn_per_batch(tmp_path):
    """device_data_path draws an epoch's shifts at once (one copy to a GPU instead of one a
    step): the same numbers in the same order, so the run is bit for bit the one drawn batch by
    batch."""
    for per_epoch in (True, False):
        short_run(tmp_path / str(per_epoch), batch_size=300, epochs=1, device_data_path=per_epoch)
    a, b = (
        torch.load(tmp_path / run / "o" / "speed_net_small_epoch01.pt", weights_only=True)
        for run in ("True", "False")
    )
    assert all(torch.equal(v, b["model"][k]) for k, v in a["model"].items())
    generator = torch.Generator().manual_seed(3)
    whole = draw_shifts(700, generator, torch.device("cpu"))
    generator.manual_seed(3)
    pieces = [torch.randint(0, 5, (n, 2), generator=generator) for n in (300, 300, 100)]
    assert torch.equal(whole, torch.cat(pieces))


@pytest.mark.parametrize("shape", [(64, 216), (256, 2304), (576, 64)])
def test_orthogonalize_evens_out_the_sizes_of_the_directions(shape):
    """Three Newton-Schulz steps with Keller Jordan's coefficients: singular values spread over
    a factor of 3 to 11 end up between about 0.45 and 1.2, for wide and tall matrices."""
    generator = torch.Generator().manual_seed(0)
    uneven = torch.randn(*shape, generator=generator) * torch.logspace(-1, 0, shape[1])
    out = speedrun.orthogonalize(uneven)
    assert out.shape == uneven.shape and out.dtype == uneven.dtype
    before, after = torch.linalg.svdvals(uneven), torch.linalg.svdvals(out.float())
    assert before.max() / before.min() > 2.5
    assert 0.45 < after.min() and after.max() < 1.25


def test_muon_sgd_groups_match_torch_sgd_and_filters_take_orthogonal_steps():
    """The plain groups of ``Muon`` are Nesterov SGD with weight decay, step for step as
    ``torch.optim.SGD``; an orthogonal group first scales each filter tensor to norm sqrt(c_out),
    then steps by lr times an orthogonalized update."""
    generator = torch.Generator().manual_seed(0)
    bias, filters = (
        torch.randn(8, generator=generator),
        torch.randn(16, 4, 3, 3, generator=generator),
    )
    mine = [bias.clone().requires_grad_(), filters.clone().requires_grad_()]
    reference = bias.clone().requires_grad_()
    muon = speedrun.Muon(
        [
            {"params": [mine[0]], "lr": 0.1, "momentum": 0.85, "weight_decay": 0.01},
            {"params": [mine[1]], "lr": 0.05, "momentum": 0.6, "orthogonal": True},
        ]
    )
    sgd = torch.optim.SGD([reference], lr=0.1, momentum=0.85, nesterov=True, weight_decay=0.01)
    for _ in range(3):
        grads = torch.randn(8, generator=generator), torch.randn(16, 4, 3, 3, generator=generator)
        mine[0].grad, mine[1].grad, reference.grad = grads[0], grads[1], grads[0].clone()
        before = mine[1].detach().clone()
        muon.step()
        sgd.step()
        assert torch.allclose(mine[0], reference, atol=1e-6)
        rescaled = before * 16**0.5 / before.norm()
        step = (rescaled - mine[1].detach()).reshape(16, -1) / 0.05
        values = torch.linalg.svdvals(step)
        assert 0.5 < values.min() and values.max() < 1.3


def test_the_muon_schedule_falls_to_zero_and_the_whitening_bias_stops_after_three_epochs():
    model = SpeedNetSmall()
    muon = speedrun.make_muon(model, lr=0.24, batch_size=2000)
    filters, norms, head, whiten = muon.param_groups
    assert filters["orthogonal"] and not norms["orthogonal"] and len(filters["params"]) == 6
    assert whiten["params"] == [model.whiten.bias] and len(head["params"]) == 1
    speedrun.set_muon_lr(muon, 0, 200, 0.24, per_epoch=25)
    assert filters["lr"] == pytest.approx(0.24)
    assert norms["lr"] == pytest.approx(0.053 * 2000) == whiten["lr"]
    assert norms["lr"] * norms["weight_decay"] == pytest.approx(2e-6 * 2000)
    speedrun.set_muon_lr(muon, 100, 200, 0.24, per_epoch=25)
    assert filters["lr"] == pytest.approx(0.12) and whiten["lr"] == 0.0
    speedrun.set_muon_lr(muon, 50, 200, 0.24, per_epoch=25)
    assert whiten["lr"] == pytest.approx(0.053 * 2000 / 3)


@pytest.mark.slow
def test_the_recipe_with_muon_trains_and_resumes_bit_for_bit(tmp_path):
    """``optimizer="muon"`` runs the whole recipe (checkpoints, lookahead, resume) with Muon:
    resumed from its epoch 1, a 2-epoch run gives its epoch 2 bit for bit."""
    whole = short_run(tmp_path / "a", batch_size=500, optimizer="muon")
    assert "Muon" in whole[0]
    first = tmp_path / "a" / "o" / "speed_net_small_epoch01.pt"
    short_run(tmp_path / "b", batch_size=500, resume=str(first), optimizer="muon")
    straight, resumed = (
        torch.load(tmp_path / run / "o" / "speed_net_small_epoch02.pt", weights_only=True)
        for run in "ab"
    )
    assert all(torch.equal(v, resumed["model"][k]) for k, v in straight["model"].items())
    assert straight["optimizer"]["param_groups"][0]["orthogonal"]


@pytest.mark.slow
def test_a_checkpoint_of_the_other_optimizer_is_refused_in_one_line(tmp_path):
    """Muon's state does not fit SGD's (four groups against three): resuming across them is
    refused before anything is written, with what to do."""
    short_run(tmp_path / "sgd", batch_size=500, epochs=1)
    with pytest.raises(CourseError, match="trained with the 'sgd' optimizer, and this run uses"):
        short_run(
            tmp_path / "b",
            batch_size=500,
            resume=str(tmp_path / "sgd" / "o" / "speed_net_small_epoch01.pt"),
            optimizer="muon",
        )
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize(("name", "value"), [("compile", "reduce_overhead"), ("optimizer", "Muon")])
def test_a_switch_the_recipe_does_not_know_is_refused(tmp_path, name, value):
    with pytest.raises(CourseError, match=f"speedrun {name} = '{value}': it must be one of"):
        short_run(tmp_path, batch_size=500, **{name: value})
    assert not (tmp_path / "o").exists()


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@needs_cuda
def test_whitening_on_cuda_gives_the_cpus_filters(images):
    """device_data_path computes the whitening in float64 on the GPU: the CPU's filters."""
    on_cpu, on_gpu = SpeedNet(), SpeedNet().cuda()
    init_whitening(on_cpu, images[:500])
    init_whitening(on_gpu, images[:500].cuda())
    assert torch.allclose(on_gpu.whiten.weight.cpu(), on_cpu.whiten.weight, rtol=1e-4, atol=1e-4)
    assert torch.allclose(on_gpu.whiten.bias.cpu(), on_cpu.whiten.bias, rtol=1e-4, atol=1e-4)


@needs_cuda
@pytest.mark.slow
@pytest.mark.parametrize("mode", ["default", "reduce-overhead"])
def test_the_compiled_run_on_cuda_learns_as_the_eager_one_and_freezes_the_whitening_bias(
    tmp_path, mode
):
    """torch.compile (with or without CUDA graphs) runs the same steps: the losses of a short
    run stay close to the eager run's, and the whitening bias, frozen by a learning rate of 0
    from epoch 4 on (not by requires_grad, which would compile again), does not move. Without
    lookahead, which pulls every weight to its slow average, the frozen bias included (as
    airbench94's does): with it, this failed on an H200 (benchmarks/2026-12-04-h200-second)."""
    runs = {}
    for compile_mode in ("off", mode):
        lines = short_run(
            tmp_path / compile_mode,
            batch_size=250,
            epochs=4,
            device="cuda",
            lookahead=False,
            compile=compile_mode,
        )
        runs[compile_mode] = [
            float(x.split("train loss ")[1].split()[0]) for x in lines if "train loss" in x
        ]
    assert runs[mode] == pytest.approx(runs["off"], rel=0.05)
    saved = [
        torch.load(tmp_path / mode / "o" / f"speed_net_epoch0{e}.pt", weights_only=True)
        for e in (3, 4)
    ]
    assert torch.equal(saved[0]["model"]["whiten.bias"], saved[1]["model"]["whiten.bias"])


@pytest.mark.slow
def test_crafted_speedrun_entries_are_refused_before_resuming(tmp_path):
    """The speed-run's own checkpoint entries are checked too: bf16 must be True or False (a
    text would be taken for True), the lookahead weights must fit the network."""
    short_run(tmp_path / "a", batch_size=500, epochs=1)
    good = torch.load(tmp_path / "a" / "o" / "speed_net_small_epoch01.pt", weights_only=True)
    first = next(iter(good["lookahead"]))
    for name, change, message in (
        ("bf16", lambda s: s.update({"bf16": "no"}), "holds bf16 = 'no', not True or False"),
        ("list", lambda s: s.update({"lookahead": [1]}), "lookahead weights that do not fit"),
        (
            "shape",
            lambda s: s["lookahead"].update({first: torch.zeros(1)}),
            "lookahead weights that do not fit",
        ),
    ):
        state = {**good, "lookahead": dict(good["lookahead"])}
        change(state)
        torch.save(state, tmp_path / f"{name}.pt")
        with pytest.raises(CourseError, match=re.escape(message)):
            short_run(tmp_path / name, batch_size=500, resume=str(tmp_path / f"{name}.pt"))
        assert not (tmp_path / name / "o").exists()
