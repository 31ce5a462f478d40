import copy
import platform
import subprocess
import sys

import pytest
import torch
from torch import nn
from torchvision import transforms

from cifar_course import data, precision
from cifar_course.benchmark import run_benchmark
from cifar_course.checkpoints import load_model
from cifar_course.engine import RunConfig, fit, seed_everything
from cifar_course.fast import FastTrainer, fastest_dtype
from cifar_course.models import LessonNet
from cifar_course.recipes.lecture import Lecture, LectureHyper, train_one_epoch


def one_batch(size=64):
    fast = data.TensorData(True, limit=size)
    return fast, next(fast.batches(size))


def test_channels_last_batches_hold_the_totensor_values(data_root):
    fast = data.TensorData(True, limit=32)
    images, labels = next(fast.batches(32, channels_last=True))
    assert images.is_contiguous(memory_format=torch.channels_last)
    plain = data.CourseCIFAR10(True, transforms.ToTensor(), limit=32)
    torch.testing.assert_close(images, torch.stack([plain[i][0] for i in range(32)]))
    assert labels.tolist() == plain.targets


def test_fast_step_computes_the_plain_step_in_fp32(data_root):
    fast_data, (images, targets) = one_batch()
    torch.manual_seed(0)
    plain = LessonNet()
    twin = copy.deepcopy(plain)
    plain_opt = torch.optim.SGD(plain.parameters(), lr=1e-2)
    loss, _ = train_one_epoch(
        plain, [(images, targets)], nn.CrossEntropyLoss(), plain_opt, torch.device("cpu")
    )
    trainer = FastTrainer(twin, torch.optim.SGD(twin.parameters(), lr=1e-2), torch.device("cpu"))
    # the one batch, in a shuffled order: the loss of a whole batch does not depend on the order
    fast_loss = trainer.train_epoch(fast_data, 64, torch.Generator().manual_seed(0)).item()
    assert abs(fast_loss - loss) < 1e-5
    for a, b in zip(plain.state_dict().values(), twin.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_mixed_precision_step_stays_close(data_root):
    fast_data, (images, targets) = one_batch()
    torch.manual_seed(0)
    model = LessonNet()
    with torch.no_grad():
        reference = nn.functional.cross_entropy(model(images), targets).item()
    dtype = precision.mixed_dtype(torch.device("cpu"))
    if dtype is None:  # no mixed precision on this CPU: nothing to compare
        return
    trainer = FastTrainer(
        model, torch.optim.SGD(model.parameters(), lr=1e-2), torch.device("cpu"), dtype
    )
    loss = trainer.train_epoch(fast_data, 64, torch.Generator().manual_seed(0)).item()
    assert abs(loss - reference) < 2e-2


def test_fast_loop_learns_clearly_above_chance(data_root):
    seed_everything(0)
    model = LessonNet()
    trainer = FastTrainer(model, torch.optim.SGD(model.parameters(), lr=1e-2), torch.device("cpu"))
    train, test = data.TensorData(True), data.TensorData(False)
    trainer.train_epoch(train, 4, torch.Generator().manual_seed(0))
    loss, accuracy = trainer.evaluate(test)
    assert accuracy > 0.18, accuracy  # chance: 0.10
    assert loss < 2.28


def test_speed_probe_picks_one_of_the_candidates(data_root):
    model = LessonNet()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-2)
    cpu = torch.device("cpu")
    dtype, times = fastest_dtype(model, optimizer, cpu, data.TensorData(True, limit=1024), 64)
    if precision.mixed_dtype(cpu) is not None:
        assert set(times) == {"fp32", "bfloat16"}
        pays = precision.pays(times["fp32"], times["bfloat16"], cpu)
        assert dtype == (torch.bfloat16 if pays else None)
    # the probe trained copies, never the model itself
    assert all(p.grad is None for p in model.parameters())


def test_a_slow_moment_during_the_speed_probe_does_not_decide():
    """Each precision is timed in turn, one warm-up call and then three calls each, and its
    fastest call counts: the first timed bf16 call made 10 times slower, as by another program
    taking the CPU for a moment, leaves the verdict to the others. (Timed once each, one after
    the other, a probe picked fp32 that way.)"""
    clock = {"now": 0.0}
    calls = []

    def block(seconds: float, name: str):
        def run():
            calls.append(name)
            slow = calls.count(name) == 2 and name == "bf16"  # the first timed bf16 call
            clock["now"] += seconds * (10 if slow else 1)

        return run

    times = precision.speedup(
        block(2.0, "fp32"), block(1.0, "bf16"), torch.device("cpu"), clock=lambda: clock["now"]
    )
    assert calls == ["fp32", "bf16"] * 4
    assert times == (2.0, 1.0)
    assert precision.pays(*times, torch.device("cpu"))
    assert not precision.pays(1.1, 1.0, torch.device("cpu"))  # below MIN_SPEEDUP on a CPU
    assert precision.pays(1.1, 1.0, torch.device("cuda"))  # any gain on a GPU


@pytest.mark.parametrize("mkldnn", [True, False])
def test_the_fast_loop_asks_onednn_about_bf16_only_where_pytorch_has_it(monkeypatch, mkldnn):
    """A PyTorch built without oneDNN has no bf16 query at all: the CPU then gets fp32."""
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: mkldnn)
    monkeypatch.setattr(
        torch.ops.mkldnn,
        "_is_mkldnn_bf16_supported",
        lambda: True if mkldnn else pytest.fail("asked a build without oneDNN"),
        raising=False,
    )
    expected = torch.bfloat16 if mkldnn else None
    assert precision.mixed_dtype(torch.device("cpu")) == expected


@pytest.mark.parametrize(
    ("capability", "dtype"), [((7, 5), torch.float16), ((8, 0), torch.bfloat16)]
)
def test_gpus_before_ampere_get_fp16_not_bf16(monkeypatch, capability, dtype):
    """torch.cuda.is_bf16_supported() says True on a T4 too, whose bf16 convolutions run on slow
    fallback kernels: the compute capability decides."""
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    assert precision.mixed_dtype(torch.device("cuda"), fp16=True) == dtype
    speedrun = None if dtype == torch.float16 else dtype  # the speed-run has no gradient scaler
    assert precision.mixed_dtype(torch.device("cuda")) == speedrun


@pytest.mark.slow
def test_fp16_trains_with_a_gradient_scaler(data_root):
    """The fp16 path (older GPUs) run on the CPU, whose autocast has fp16 too: the scaler is on,
    the weights stay fp32 and move, the loss is finite."""
    model = LessonNet()
    before = copy.deepcopy(model.state_dict())
    trainer = FastTrainer(
        model, torch.optim.SGD(model.parameters(), lr=1e-2), torch.device("cpu"), torch.float16
    )
    assert trainer.dtype == torch.float16 and trainer.scaler.is_enabled()
    # one step: fp16 on a CPU is slow, and one step shows the scaler at work
    loss = trainer.train_epoch(data.TensorData(True, limit=64), 64, torch.Generator()).item()
    assert 0 < loss < 10
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert any(not torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_cuda_graphs_are_refused_where_they_cannot_work():
    model = LessonNet()
    with pytest.raises(ValueError, match="plain SGD"):
        FastTrainer(
            model, torch.optim.SGD(model.parameters(), lr=1e-2), torch.device("cpu"), graphs=True
        ).train_epoch(data.TensorData(True, limit=8), 4)
    trainer = FastTrainer(
        model, torch.optim.SGD(model.parameters(), lr=1e-2, momentum=0.9), torch.device("cpu")
    )
    assert not trainer.uses_graphs


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def cuda_twins(graphs_a, graphs_b, momentum=0.0):
    cuda = torch.device("cuda")
    torch.manual_seed(0)
    first = LessonNet()
    second = copy.deepcopy(first)
    trainers = [
        FastTrainer(
            m,
            torch.optim.SGD(m.parameters(), lr=1e-2, momentum=momentum),
            cuda,
            graphs=g,
        )
        for m, g in ((first, graphs_a), (second, graphs_b))
    ]
    return trainers, data.TensorData(True, cuda, limit=1000)  # 15 full batches of 64, then 40


@needs_cuda
def test_cuda_graph_capture_leaves_the_weights_as_they_were(data_root):
    (trainer, _), train = cuda_twins(True, False)
    before = copy.deepcopy(trainer.model.state_dict())
    trainer._capture(train, 64, key=())
    for name, value in trainer.model.state_dict().items():
        assert torch.equal(value, before[name]), name


@needs_cuda
def test_cuda_graph_epochs_compute_what_the_eager_loop_computes(data_root):
    (graphed, eager), train = cuda_twins(True, False)
    assert graphed.uses_graphs and not eager.uses_graphs
    for epoch in range(3):
        losses = [
            t.train_epoch(train, 64, torch.Generator().manual_seed(epoch)).item()
            for t in (graphed, eager)
        ]
        assert abs(losses[0] - losses[1]) < 1e-3 * losses[1], (epoch, losses)
    for a, b in zip(graphed.model.parameters(), eager.model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4)
    torch.manual_seed(0)
    start = LessonNet()  # the twins' initial weights: training must have moved them
    pairs = zip(graphed.model.parameters(), start.parameters(), strict=True)
    moved = [(p.cpu() - q).abs().max().item() for p, q in pairs]
    assert min(moved) > 1e-4, moved


@needs_cuda
def test_the_speed_probe_on_cuda_leaves_the_model_as_it_was(data_root):
    cuda = torch.device("cuda")
    model = LessonNet()
    before = copy.deepcopy(model.state_dict())
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-2)
    _, times = fastest_dtype(model, optimizer, cuda, data.TensorData(True, cuda, limit=1000), 64)
    mixed = str(precision.mixed_dtype(cuda, fp16=True)).replace("torch.", "")
    assert set(times) == {"fp32", mixed}
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(v.cpu(), before[k]) for k, v in model.state_dict().items())


@needs_cuda
def test_momentum_sgd_runs_eagerly_on_cuda(data_root):
    (trainer, _), train = cuda_twins(None, False, momentum=0.9)
    assert not trainer.uses_graphs
    assert trainer.train_epoch(train, 64, torch.Generator().manual_seed(0)).item() > 0


def test_fit_fast_checkpoint_works_with_evaluate(data_root, tmp_path):
    run = RunConfig(out=str(tmp_path / "ck"), logdir=str(tmp_path / "tb"))
    hyper = LectureHyper(epochs=1, batch_size=4, fast=True)
    history = fit(Lecture, run, hyper, log=lambda line: None)
    model = load_model(tmp_path / "ck" / "lesson_net_epoch01.pt")
    test = data.TensorData(False)
    with torch.no_grad():
        predicted = torch.cat([model(x).argmax(1) for x, _ in test.batches(500)])
    accuracy = (predicted == test.labels).float().mean().item()
    assert abs(accuracy - history[-1]["test_accuracy"]) < 1e-6
    assert accuracy > 0.15


@pytest.mark.slow
def test_benchmark_runs_and_reports(data_root):
    lines = []
    lecture, fast = run_benchmark("cpu", epochs=1, log=lines.append)
    text = "\n".join(lines)
    assert "images/s" in text and "peak process RSS" in text
    assert lines[-1].startswith("speed-up (fast / lecture, images per second): ")
    assert lecture.images == fast.images == 2000
    assert lecture.seconds > 0 and fast.seconds > 0 and fast.peak_bytes > 0
    ratio = float(lines[-1].rsplit(" ", 1)[1].rstrip("x"))
    assert abs(ratio - fast.images_per_second / lecture.images_per_second) < 0.01


FAULTS_SCRIPT = """
import resource, sys, torch
from cifar_course.device import keep_freed_memory

applied = keep_freed_memory() if sys.argv[1] == "keep" else None
faults = []
for _ in range(16):  # forward-like steps, each freeing its three 64 MiB blocks again
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    x = torch.ones(512, 32, 32, 32)
    y = torch.relu(x) * 2
    del x, y
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(applied, *faults)
"""


def page_faults_per_step(mode: str) -> tuple[str, list[int]]:
    result = subprocess.run(
        [sys.executable, "-c", FAULTS_SCRIPT, mode], capture_output=True, text=True, check=True
    )
    applied, *faults = result.stdout.split()
    return applied, [int(f) for f in faults]


@pytest.mark.slow
@pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
    reason="keep_freed_memory only acts on Linux with glibc",
)
def test_keep_freed_memory_stops_the_page_faults_of_large_allocations():
    _, default = page_faults_per_step("default")
    applied, kept = page_faults_per_step("keep")
    assert applied == "True"
    # By default every step faults in its three 64 MiB blocks afresh: 49,152 pages of 4 KiB (or
    # 96 of 2 MiB with transparent huge pages set to "always"). With the setting, the heap takes a
    # few steps to settle (measured: a block or two fault again up to step 7), then none do. The
    # last 8 steps together must fault in less than one default step does.
    assert min(default[8:]) > 0
    assert sum(kept[8:]) < min(default[8:])
