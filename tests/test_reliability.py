"""Failures a beginner can cause end in one clear line, and never in lost work or code execution."""

import io
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cifar_course import data
from cifar_course.checkpoints import load_checkpoint, save_state_dict
from cifar_course.cli import main
from cifar_course.errors import CourseError
from cifar_course.models import LessonNet

IMAGES = Path(__file__).resolve().parents[1] / "cifar_course" / "images"


def cli(*args, env=None, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "cifar_course", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
    )


def assert_one_clear_line(run):
    assert run.returncode != 0
    lines = run.stderr.strip().splitlines()
    assert lines and all(line.startswith("error: ") for line in lines), run.stderr
    assert "Traceback" not in run.stderr


# --- interrupted training -------------------------------------------------------------------


def train_args(out, logdir, *extra):
    """The command line of a 3-epoch seeded run, as a list of arguments."""
    args = ["train", "--epochs", "3", "--seed", "7", "--out", str(out), "--logdir", str(logdir)]
    return [*args, *extra]


@pytest.fixture(scope="module")
def uninterrupted(data_root, tmp_path_factory):
    """The last checkpoint of the 3-epoch run, never stopped: trained once for the tests that
    kill and resume it (``make test`` keeps them on one worker: their ``xdist_group``)."""
    base = tmp_path_factory.mktemp("straight")
    out = base / "ck"
    assert main(train_args(out, base / "tb")) == 0
    return load_checkpoint(out / "lesson_net_epoch03.pt")


def assert_same_weights(a, b):
    """Bit for bit: a resumed run repeats the uninterrupted one's arithmetic exactly."""
    assert a["model"].keys() == b["model"].keys()
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), f"{key} differs"


@pytest.mark.slow
@pytest.mark.xdist_group("resume")
def test_sigkill_mid_epoch_then_resume(data_root, tmp_path, capsys, uninterrupted):
    out = tmp_path / "ck"
    proc = subprocess.Popen(
        [sys.executable, "-m", "cifar_course", *train_args(out, tmp_path / "tb")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    first = out / "lesson_net_epoch01.pt"
    deadline = time.time() + 120
    while not first.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.01)
    assert first.exists(), "the first epoch never finished"
    time.sleep(0.2)  # well inside epoch 2, which takes about a second
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "lesson_net_epoch02.pt").exists(), "killed too late to test anything"
    assert load_checkpoint(first)["epoch"] == 1
    assert main(train_args(out, tmp_path / "tb", "--resume", str(first))) == 0
    assert "resumed from" in capsys.readouterr().out
    resumed = load_checkpoint(out / "lesson_net_epoch03.pt")
    assert resumed["epoch"] == 3 and [h["epoch"] for h in resumed["history"]] == [1, 2, 3]
    assert_same_weights(resumed, uninterrupted)


@pytest.mark.slow
@pytest.mark.xdist_group("resume")
@pytest.mark.parametrize("where", ["while writing", "before the rename"])
def test_sigkill_mid_checkpoint_write(data_root, tmp_path, where, uninterrupted):
    out = tmp_path / "ck"
    # Die during the second checkpoint's save: half-way through writing it, or once it is
    # written but not yet renamed into place.
    driver = textwrap.dedent(f"""
        import os, signal, sys, torch
        from cifar_course import checkpoints
        from cifar_course.cli import main
        calls = []
        real_save, real_replace = torch.save, os.replace
        def dying_save(obj, f, *args, **kwargs):
            calls.append(1)
            if len(calls) == 2 and {where!r} == "while writing":
                f.write(b"PK\\x03\\x04 half a checkpoint")
                f.flush()
                os.kill(os.getpid(), signal.SIGKILL)
            return real_save(obj, f, *args, **kwargs)
        def dying_replace(src, dst):
            if len(calls) == 2 and {where!r} == "before the rename":
                os.kill(os.getpid(), signal.SIGKILL)
            return real_replace(src, dst)
        checkpoints.torch.save = dying_save
        checkpoints.os.replace = dying_replace
        main(["train", "--epochs", "3", "--seed", "7", "--out", {str(out)!r},
              "--logdir", {str(tmp_path / "tb")!r}])
    """)
    run = subprocess.run([sys.executable, "-c", driver], capture_output=True)
    assert run.returncode == -signal.SIGKILL
    names = sorted(p.name for p in out.iterdir())
    assert "lesson_net_epoch01.pt" in names and "lesson_net_epoch02.pt" not in names
    first = out / "lesson_net_epoch01.pt"
    assert load_checkpoint(first)["epoch"] == 1
    assert main(train_args(out, tmp_path / "tb", "--resume", str(first))) == 0
    assert_same_weights(load_checkpoint(out / "lesson_net_epoch03.pt"), uninterrupted)


# --- damaged checkpoints --------------------------------------------------------------------


def damaged_checkpoints(tmp_path):
    good = save_state_dict(LessonNet(), tmp_path / "good.pth")
    files = {}
    files["truncated"] = tmp_path / "truncated.pth"
    files["truncated"].write_bytes(good.read_bytes()[:3000])
    files["empty"] = tmp_path / "empty.pth"
    files["empty"].write_bytes(b"")
    files["wrong format"] = tmp_path / "notes.pth"
    files["wrong format"].write_text("not a checkpoint at all")
    sd = LessonNet().state_dict()
    sd["linear2.weight"] = torch.zeros(100, 64)
    sd["linear2.bias"] = torch.zeros(100)
    files["wrong architecture"] = tmp_path / "wide.pth"
    torch.save(sd, files["wrong architecture"])
    sd = LessonNet().state_dict()
    sd.pop("conv1.bias")
    sd["head.weight"] = torch.zeros(1)
    files["missing and unexpected keys"] = tmp_path / "keys.pth"
    torch.save(sd, files["missing and unexpected keys"])
    return files


def in_process(args: list[str], capsys) -> str:
    """Run the command line in this process (no interpreter to start: a tenth of the time);
    its stderr, once it has returned 1. An exception that escapes fails the test."""
    assert main(args) == 1, args
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), (args, err)
    return err


def test_damaged_checkpoints_everywhere(data_root, tmp_path, capsys):
    for problem, path in damaged_checkpoints(tmp_path).items():
        for args in (
            ["evaluate", "--checkpoint", str(path)],
            ["predict", "--checkpoint", str(path), str(IMAGES / "dog.jpg")],
            [
                "train",
                "--epochs",
                "2",
                "--resume",
                str(path),
                "--out",
                str(tmp_path / "o"),
                "--logdir",
                str(tmp_path / "l"),
            ],
        ):
            err = in_process(args, capsys)
            assert str(path) in err, (problem, args[0], err)
        assert not (tmp_path / "o").exists()


# --- untrusted data files --------------------------------------------------------------------


class Payload:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_planted_data_batch_cannot_run_code(data_root, tmp_path, monkeypatch):
    root = tmp_path / "planted"
    folder = root / data.BASE_FOLDER
    folder.mkdir(parents=True)
    for f in (data_root / data.BASE_FOLDER).iterdir():
        os.symlink(f, folder / f.name)
    marker = tmp_path / "pwned"
    (folder / "test_batch").unlink()
    (folder / "test_batch").write_bytes(pickle.dumps({"data": Payload(str(marker)), "labels": []}))
    md5 = data._md5(folder / "test_batch")  # a planted MD5SUMS cannot make it run either
    sums = (data_root / "MD5SUMS").read_text() + f"{md5}  {data.BASE_FOLDER}/test_batch\n"
    (root / "MD5SUMS").write_text(sums)
    monkeypatch.setenv("CIFAR_COURSE_DATA", str(root))
    with pytest.raises(CourseError, match="unexpected object"):
        data.get_datasets()
    assert not marker.exists()


# --- bad data -----------------------------------------------------------------------------


def broken_data_folders(data_root, tmp_path):
    folders = {}

    def copy(name):
        root = tmp_path / name
        (root / data.BASE_FOLDER).mkdir(parents=True)
        for f in (data_root / data.BASE_FOLDER).iterdir():
            os.symlink(f, root / data.BASE_FOLDER / f.name)
        shutil.copy(data_root / "MD5SUMS", root / "MD5SUMS")
        folders[name] = root
        return root / data.BASE_FOLDER

    # test_batch: every entry point reads the test set
    batch = copy("missing")
    (batch / "test_batch").unlink()
    batch = copy("truncated")
    raw = (data_root / data.BASE_FOLDER / "test_batch").read_bytes()
    (batch / "test_batch").unlink()
    (batch / "test_batch").write_bytes(raw[:1000])
    batch = copy("corrupted")
    (batch / "test_batch").unlink()
    (batch / "test_batch").write_bytes(raw[:500] + bytes([raw[500] ^ 1]) + raw[501:])
    folders["wrong layout"] = tmp_path / "flat"
    folders["wrong layout"].mkdir()
    for f in (data_root / data.BASE_FOLDER).iterdir():
        os.symlink(f, folders["wrong layout"] / f.name)
    return folders


def test_bad_data_gives_one_clear_line_from_every_entry_point(
    data_root, tmp_path, capsys, monkeypatch
):
    checkpoint = save_state_dict(LessonNet(), tmp_path / "m.pth")
    for problem, root in broken_data_folders(data_root, tmp_path).items():
        monkeypatch.setenv("CIFAR_COURSE_DATA", str(root))
        for args in (
            ["data"],
            [
                "train",
                "--epochs",
                "1",
                "--out",
                str(tmp_path / "o"),
                "--logdir",
                str(tmp_path / "l"),
            ],
            ["evaluate", "--checkpoint", str(checkpoint)],
            ["benchmark"],
        ):
            err = in_process(args, capsys)
            expected = "cifar-10-batches-py" if problem == "wrong layout" else "test_batch"
            assert expected in err, (problem, args[0], err)


# --- bad images ---------------------------------------------------------------------------


def make_bad_and_odd_images(folder: Path) -> tuple[list[Path], list[Path]]:
    good, bad = [], []
    (folder / "text.png").write_text("this is text")
    buffer = io.BytesIO()
    Image.effect_noise((300, 300), 60).convert("RGB").save(buffer, "JPEG")
    (folder / "truncated.jpg").write_bytes(buffer.getvalue()[:2000])
    (folder / "zero.jpg").write_bytes(b"")
    (folder / "a folder.png").mkdir()
    bad += [folder / n for n in ("text.png", "truncated.jpg", "zero.jpg", "a folder.png")]
    bad.append(folder / "missing.jpg")
    Image.new("RGB", (1, 1), (255, 0, 0)).save(folder / "one.png")
    Image.new("RGB", (10_000, 10_000), (0, 90, 200)).save(folder / "huge.png")
    frames = [Image.new("P", (40, 40), i) for i in range(3)]
    frames[0].save(folder / "anim.gif", save_all=True, append_images=frames[1:], duration=50)
    Image.fromarray(np.full((50, 50), 40_000, dtype=np.uint16)).save(folder / "deep.png")
    Image.new("RGB", (50, 50), (10, 200, 30)).convert("CMYK").save(folder / "cmyk.jpg")
    Image.new("RGB", (50, 50), (200, 10, 30)).save(folder / "测试 图片.png")
    good += [
        folder / n
        for n in ("one.png", "huge.png", "anim.gif", "deep.png", "cmyk.jpg", "测试 图片.png")
    ]
    return good, bad


@pytest.mark.slow
def test_predict_batch_continues_past_bad_files(tmp_path):
    good, bad = make_bad_and_odd_images(tmp_path)
    checkpoint = save_state_dict(LessonNet(), tmp_path / "m.pth")
    files = [str(p) for pair in zip(bad, good, strict=False) for p in pair] + [str(good[-1])]
    run = cli("predict", "--checkpoint", str(checkpoint), *files)
    assert run.returncode == 1
    out_lines = run.stdout.strip().splitlines()
    assert sorted(line.split("\t")[0] for line in out_lines) == sorted(map(str, good))
    err_lines = run.stderr.strip().splitlines()
    assert len(err_lines) == len(bad) + 1  # one per bad file, then the summary
    for path in bad:
        assert sum(str(path) in line for line in err_lines) == 1, path
    assert f"{len(bad)} of {len(files)} images could not be classified" in err_lines[-1]
    assert "Traceback" not in run.stderr


# --- bad arguments ------------------------------------------------------------------------


def test_unwritable_output_folder(tmp_path):
    (tmp_path / "a file").write_text("x")
    run = cli("train", "--out", str(tmp_path / "a file" / "ck"), "--logdir", str(tmp_path / "l"))
    assert_one_clear_line(run)
    assert "--out" in run.stderr and "is a file" in run.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a file"]


# --- one run per --out ---------------------------------------------------------------------


LOCKER = (
    "import fcntl, os, sys, time\n"
    "fd = os.open(sys.argv[1], os.O_RDONLY)\n"
    "fcntl.flock(fd, fcntl.LOCK_EX | (fcntl.LOCK_NB if len(sys.argv) > 2 else 0))\n"
    "print('locked', flush=True)\n"
    "time.sleep(float(sys.argv[2]) if len(sys.argv) > 2 else 60)\n"
)


@pytest.mark.skipif(sys.platform == "win32", reason="advisory locks need fcntl")
def test_a_second_run_into_an_out_in_use_is_refused_in_one_line(data_root, tmp_path, capsys):
    """Another process owns --out (as a run does while it trains): a new run into it stops before
    training, in one line, and writes nothing there; once the owner is gone, it runs."""
    out = tmp_path / "ck"
    out.mkdir()
    owner = subprocess.Popen(
        [sys.executable, "-c", LOCKER, str(out)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert owner.stdout.readline().strip() == "locked"
        args = ["train", "--epochs", "1", "--out", str(out), "--logdir", str(tmp_path / "tb")]
        assert main(args) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "is in use by another training run" in err[0], err
        assert list(out.iterdir()) == []
    finally:
        owner.kill()
        owner.wait()


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="advisory locks need fcntl")
def test_a_run_owns_its_out_while_it_trains_and_lets_go_after(data_root, tmp_path):
    """While `train` runs, nothing else can take its --out; it removes a killed save's leftover
    temporary file there; after it ends, the folder is free."""
    out = tmp_path / "ck"
    out.mkdir()
    (out / ".lesson_net_epoch01.pt.x1y2.tmp").write_bytes(b"half a checkpoint")
    run = subprocess.Popen(
        [sys.executable, "-m", "cifar_course", *train_args(out, tmp_path / "tb")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 120
        while not (out / "lesson_net_epoch01.pt").exists() and time.time() < deadline:
            time.sleep(0.05)
        probe = subprocess.run(
            [sys.executable, "-c", LOCKER, str(out), "0"], capture_output=True, text=True
        )
        assert probe.returncode != 0 and "BlockingIOError" in probe.stderr  # taken
        assert not (out / ".lesson_net_epoch01.pt.x1y2.tmp").exists()
    finally:
        assert run.wait(timeout=300) == 0
    probe = subprocess.run(
        [sys.executable, "-c", LOCKER, str(out), "0"], capture_output=True, text=True
    )
    assert probe.returncode == 0, probe.stderr  # free again


def test_a_save_removes_only_its_own_temporary_file(tmp_path):
    """Another process's temporary file beside the target, still being written, is left alone."""
    from cifar_course.checkpoints import atomic_save

    theirs = tmp_path / ".model.pt.another.tmp"
    theirs.write_bytes(b"another process is writing this")
    atomic_save({"w": torch.ones(2)}, tmp_path / "model.pt")
    assert theirs.read_bytes() == b"another process is writing this"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".model.pt.another.tmp", "model.pt"]


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--epochs", "1000000000000", "--epochs must be from 1 to 100,000"),
        ("--batch-size", "100000000000000000000", "--batch-size must be from 1 to 50,000"),
        ("--lr", "1e39", "--lr must be a positive number up to 1000"),
    ],
)
def test_absurd_numbers_are_refused_in_one_line_before_anything_is_written(
    tmp_path, capsys, flag, value, message
):
    args = ["train", flag, value, "--out", str(tmp_path / "o"), "--logdir", str(tmp_path / "l")]
    assert main(args) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert list(tmp_path.iterdir()) == []


def test_a_file_name_cannot_break_or_forge_predicts_lines(tmp_path, capsys):
    """Control characters in a name are printed as escapes: one image, one line, on stdout as on
    stderr, so a name cannot print a result line of its own."""
    checkpoint = save_state_dict(LessonNet(), tmp_path / "m.pth")
    good = tmp_path / "dog\nfake.png\tcat\t99.9%.jpg"
    shutil.copy(IMAGES / "dog.jpg", good)
    bad = tmp_path / "broken\r\nerror: all fine.png"
    bad.write_text("not an image")
    assert main(["predict", "--checkpoint", str(checkpoint), str(good), str(bad)]) == 1
    out, err = capsys.readouterr()
    assert len(out.strip().splitlines()) == 1 and "dog\\nfake.png\\tcat" in out
    lines = err.strip().splitlines()
    assert len(lines) == 2 and all(line.startswith("error: ") for line in lines), lines
    assert "broken\\r\\nerror: all fine.png" in lines[0]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda t: t.fill_(float("nan")), "NaN or infinite values in"),
        (lambda t: t.fill_(float("inf")), "NaN or infinite values in"),
        (lambda t: t.to(torch.int64), "as torch.int64, not floating-point weights"),
        (lambda t: t.to(torch.bool), "as torch.bool, not floating-point weights"),
        (lambda t: t.to(torch.complex64), "as torch.complex64, not floating-point weights"),
        (lambda t: t.to_sparse(), "as a torch.sparse_coo tensor, not a plain tensor of weights"),
        (lambda t: t.to("meta"), "as a tensor without data (meta), not a plain tensor"),
    ],
)
def test_weights_that_are_not_finite_floats_are_refused_in_one_line(
    tmp_path, capsys, change, message
):
    state = LessonNet().state_dict()
    state["conv1.weight"] = change(state["conv1.weight"].clone())
    torch.save(state, tmp_path / "m.pth")
    for command in (
        ["evaluate", "--checkpoint", str(tmp_path / "m.pth")],
        ["predict", "--checkpoint", str(tmp_path / "m.pth"), str(IMAGES / "dog.jpg")],
        ["export", str(tmp_path / "m.pth"), str(tmp_path / "out.pth")],
    ):
        assert main(command) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0] and "conv1.weight" in err[0], (command, err)
    assert not (tmp_path / "out.pth").exists()


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="needs /dev/zero")
def test_a_device_or_fifo_is_no_checkpoint_and_export_replaces_only_regular_files(tmp_path, capsys):
    fifo = tmp_path / "pipe.pt"
    os.mkfifo(fifo)
    for odd in (fifo, Path("/dev/zero")):
        assert main(["evaluate", "--checkpoint", str(odd)]) == 1
        err = capsys.readouterr().err
        assert "is not a regular file" in err and "interrupted" not in err, err
    good = save_state_dict(LessonNet(), tmp_path / "m.pth")
    assert main(["export", str(good), str(fifo), "--force"]) == 1
    assert "is not a regular file" in capsys.readouterr().err
    assert fifo.is_fifo()  # still the FIFO, not replaced by a file


def test_a_name_too_long_is_one_error_line_and_the_next_images_are_classified(tmp_path, capsys):
    checkpoint = save_state_dict(LessonNet(), tmp_path / "m.pth")
    too_long = str(tmp_path / ("x" * 300 + ".png"))
    assert (
        main(["predict", "--checkpoint", str(checkpoint), too_long, str(IMAGES / "dog.jpg")]) == 1
    )
    out, err = capsys.readouterr()
    assert len(out.strip().splitlines()) == 1 and "dog.jpg" in out
    lines = err.strip().splitlines()
    assert len(lines) == 2 and "cannot be read (File name too long)" in lines[0], lines


def test_resume_from_a_pickle_says_trust_pickle_does_not_apply(tmp_path, capsys):
    """--resume never unpickles: a whole model is no training checkpoint, and the message must
    not advise the flag the learner already passed."""
    whole = tmp_path / "whole.pt"
    torch.save(LessonNet(), whole)
    out = tmp_path / "o"
    args = train_args(out, tmp_path / "l", "--resume", str(whole), "--trust-pickle")
    assert main(args) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--trust-pickle does not change that" in err[0], err
    assert "use --init-from" in err[0] and not out.exists()


# --- round two: crafted checkpoints, odd folders, the operating system's refusals -----------


def lecture_checkpoint(path: Path) -> Path:
    """A real training checkpoint of the lecture recipe after one epoch, as ``train`` saves it,
    with a momentum buffer in its optimizer state so that buffers can be checked too."""
    from cifar_course.checkpoints import save_checkpoint

    model = LessonNet()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    model(torch.rand(2, 3, 32, 32)).sum().backward()
    optimizer.step()
    row = {"epoch": 1, "train_loss": 2.0, "test_loss": 2.0, "test_accuracy": 0.2, "seconds": 1.0}
    return save_checkpoint(path, model, optimizer, 1, [row], {"recipe": "lecture"})


def crafted(change):
    def craft(state):
        change(state)
        return state

    return craft


CRAFTED = {
    "a wrong shape": crafted(lambda s: s["model"].update({"conv1.bias": torch.zeros(5)})),
    "an extra key": crafted(lambda s: s["model"].update({"extra.weight": torch.zeros(1)})),
    "a missing key": crafted(lambda s: s["model"].pop("linear2.bias")),
    "an epoch as text": crafted(lambda s: s.update({"epoch": "1"})),
    "a negative epoch": crafted(lambda s: s.update({"epoch": -4})),
    "an epoch of True": crafted(lambda s: s.update({"epoch": True})),
    "no history": crafted(lambda s: s.pop("history")),
    "a history of numbers": crafted(lambda s: s.update({"history": [1, 2]})),
    "no optimizer groups": crafted(lambda s: s["optimizer"].update({"param_groups": []})),
    "an optimizer of text": crafted(lambda s: s.update({"optimizer": "sgd"})),
    "a wrong momentum buffer": crafted(
        lambda s: s["optimizer"]["state"][0].update({"momentum_buffer": torch.zeros(3)})
    ),
    "state for no parameter": crafted(lambda s: s["optimizer"]["state"].update({99: {}})),
    "a 0-dim momentum buffer": crafted(
        lambda s: s["optimizer"]["state"][0].update({"momentum_buffer": torch.tensor(1.0)})
    ),
    "a sparse momentum buffer": crafted(
        lambda s: s["optimizer"]["state"][0].update(
            {"momentum_buffer": s["optimizer"]["state"][0]["momentum_buffer"].to_sparse()}
        )
    ),
    "a NaN momentum buffer": crafted(
        lambda s: s["optimizer"]["state"][0]["momentum_buffer"].fill_(float("nan"))
    ),
    "parameters numbered twice": crafted(
        lambda s: s["optimizer"]["param_groups"][0].update(
            {"params": [0] * len(s["optimizer"]["param_groups"][0]["params"])}
        )
    ),
    "an epoch of 10**30": crafted(lambda s: s.update({"epoch": 10**30})),
    "a history row of text": crafted(lambda s: s["history"][0].update({"test_accuracy": "x"})),
}


@pytest.mark.parametrize("case", list(CRAFTED))
def test_a_crafted_or_damaged_checkpoint_is_refused_before_resuming(
    data_root, tmp_path, capsys, case
):
    """--resume checks every field it uses before training (issue 30, item 7): one line, and
    nothing written, not even the TensorBoard log; a negative epoch never trains from -4."""
    state = torch.load(lecture_checkpoint(tmp_path / "good.pt"), weights_only=True)
    torch.save(CRAFTED[case](state), tmp_path / "bad.pt")
    out, logs = tmp_path / "out", tmp_path / "runs"
    args = ["train", "--resume", str(tmp_path / "bad.pt"), "--epochs", "3"]
    assert main([*args, "--out", str(out), "--logdir", str(logs)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "bad.pt" in err[0], err
    assert not out.exists() and not logs.exists()


def test_the_checks_pass_a_good_checkpoint_and_it_resumes(data_root, tmp_path, capsys):
    """The same checks let the untouched checkpoint through: it resumes, and trains epoch 2."""
    good = lecture_checkpoint(tmp_path / "good.pt")
    args = ["train", "--resume", str(good), "--epochs", "2", "--batch-size", "500"]
    assert main([*args, "--out", str(tmp_path / "o"), "--logdir", str(tmp_path / "l")]) == 0
    assert (tmp_path / "o" / "lesson_net_epoch02.pt").is_file()
    assert f"resumed from {good} after epoch 1" in capsys.readouterr().out


def test_overwrite_refuses_a_folder_where_a_checkpoint_would_go_before_training(
    data_root, tmp_path, capsys
):
    """--overwrite replaces files, not a folder of a checkpoint's name (item 15): refused at
    once, before an epoch is trained, and the folder stays."""
    blocked = tmp_path / "o" / "lesson_net_epoch01.pt"
    (blocked / "inside").mkdir(parents=True)
    args = ["train", "--epochs", "1", "--overwrite", "--out", str(tmp_path / "o")]
    assert main([*args, "--logdir", str(tmp_path / "l")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "lesson_net_epoch01.pt, which is not a file" in err[0], err
    assert (blocked / "inside").is_dir() and not (tmp_path / "l").exists()


def limited_writes(limit: int):
    """A ``preexec_fn`` that lets the child process write files of at most ``limit`` bytes: its
    writes beyond that fail as they would on a full disk, with EFBIG (Python ignores SIGXFSZ)."""
    import resource

    def apply():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


@pytest.mark.skipif(sys.platform == "win32", reason="resource limits are POSIX")
def test_a_save_the_file_system_refuses_is_one_line_and_keeps_nothing_half_written(
    data_root, tmp_path
):
    """The operating system's refusals go through one mapping at the command line's boundary
    (item 3): a checkpoint too large to be written, as on a full disk, is one line naming the
    file, for train and export; no temporary file is left, and an earlier file is intact."""
    out, logs = tmp_path / "o", tmp_path / "l"
    env = dict(os.environ, CIFAR_COURSE_SMOKE="1")
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "cifar_course",
            "train",
            "--epochs",
            "1",
            "--batch-size",
            "500",
            "--out",
            str(out),
            "--logdir",
            str(logs),
        ],
        capture_output=True,
        text=True,
        env=env,
        preexec_fn=limited_writes(100_000),
    )
    errors = [line for line in run.stderr.splitlines() if line.startswith("error: ")]
    assert run.returncode == 1 and len(errors) == 1 and "Traceback" not in run.stderr, run.stderr
    assert run.stderr.rstrip().endswith(errors[0])  # the last line, after the progress bars
    assert "lesson_net_epoch01.pt" in run.stderr and "ulimit" in run.stderr
    assert "Files saved before this are intact" in run.stderr
    assert sorted(p.name for p in out.iterdir()) == []  # no half-written or temporary file
    good = lecture_checkpoint(tmp_path / "good.pt")
    earlier = tmp_path / "exported.pt"
    earlier.write_bytes(b"an earlier export")
    run = subprocess.run(
        [sys.executable, "-m", "cifar_course", "export", str(good), str(earlier), "--force"],
        capture_output=True,
        text=True,
        env=env,
        preexec_fn=limited_writes(10_000),
    )
    assert_one_clear_line(run)
    assert earlier.read_bytes() == b"an earlier export"


def test_each_operating_system_error_becomes_one_line_with_what_to_do():
    """The one mapping: the file, the advice and the system's own words, on one line."""
    import errno

    from cifar_course.errors import os_error_message

    full = os_error_message(OSError(errno.ENOSPC, "No space left on device", "ck/x.pt"))
    assert full == (
        "cannot use 'ck/x.pt': the disk is full: free some space, or choose a folder on another "
        "disk (No space left on device). Files saved before this are intact."
    )
    denied = os_error_message(PermissionError(errno.EACCES, "Permission denied", "MD5SUMS"))
    assert "'MD5SUMS': permission denied" in denied
    odd = os_error_message(OSError(errno.EXDEV, "Invalid cross-device link"))
    assert odd.startswith("cannot use a file: Invalid cross-device link.")
    for message in (full, denied, odd):
        assert "\n" not in message


def test_a_data_folder_name_too_long_is_one_line_from_the_command_line(tmp_path):
    """An operating-system error while looking for the data (a name longer than the file system
    allows, which pathlib does not swallow) reaches the learner as one line too."""
    run = cli("data", env=dict(os.environ, CIFAR_COURSE_DATA=str(tmp_path / ("a" * 300))))
    assert_one_clear_line(run)
    assert "the name is too long for the file system" in run.stderr


def test_checksums_that_are_not_text_are_one_line(data_root, tmp_path):
    """An MD5SUMS with bytes that are not UTF-8 (item 14)."""
    from test_data import _copy_with_links

    folder = _copy_with_links(data_root, tmp_path)
    (folder / "test_batch").unlink()
    (folder / "test_batch").write_bytes(b"not the batch")  # so that MD5SUMS must be read
    (tmp_path / "MD5SUMS").write_bytes(b"\xff\xfe\x00 not text\n")
    run = cli("data", env=dict(os.environ, CIFAR_COURSE_DATA=str(tmp_path)))
    assert_one_clear_line(run)
    assert "is not a list of checksums" in run.stderr


def test_a_batch_whose_labels_are_text_is_one_line(data_root, tmp_path, monkeypatch):
    """Labels that are strings, in a batch whose MD5SUMS line was edited to match (item 14)."""
    from test_data import _copy_with_links

    folder = _copy_with_links(data_root, tmp_path)
    with (folder / "test_batch").open("rb") as f:
        entry = pickle.load(f, encoding="latin1")
    entry["labels"] = [str(label) for label in entry["labels"]]
    (folder / "test_batch").unlink()
    with (folder / "test_batch").open("wb") as f:
        pickle.dump(entry, f)
    with (tmp_path / "MD5SUMS").open("a") as sums:  # a later line wins
        sums.write(f"{data._md5(folder / 'test_batch')}  x/test_batch\n")
    monkeypatch.setenv("CIFAR_COURSE_DATA", str(tmp_path))
    with pytest.raises(CourseError, match="has a label '3', not a class number 0-9"):
        data.load_arrays(False, tmp_path)


def test_a_resumed_run_takes_its_own_optimizer_settings_not_the_checkpoints(tmp_path):
    """A checkpoint's optimizer settings could have been edited (maximize=True would climb the
    loss, momentum="abc" would crash the step): the buffers go on, the settings are this run's."""
    from cifar_course.engine import resume
    from cifar_course.recipes.lecture import Lecture, LectureHyper

    state = torch.load(lecture_checkpoint(tmp_path / "good.pt"), weights_only=True)
    state["optimizer"]["param_groups"][0].update(
        {"maximize": True, "momentum": "abc", "weight_decay": 1e30}
    )
    torch.save(state, tmp_path / "edited.pt")
    recipe = Lecture(LectureHyper(epochs=2), torch.device("cpu"), None, 0, lambda line: None)
    resume(recipe, str(tmp_path / "edited.pt"), epochs=2, log=lambda line: None)
    group = recipe.optimizer.param_groups[0]
    assert (group["maximize"], group["momentum"], group["weight_decay"]) == (False, 0, 0)
    assert recipe.optimizer.state[group["params"][0]]["momentum_buffer"].shape == (32, 3, 5, 5)


def test_a_run_removes_only_its_own_kind_of_temporary_file(tmp_path):
    """A training run cleans up the temporary files of killed checkpoint saves in --out, and
    nothing else: a learner's own .something.tmp stays."""
    from cifar_course.engine import own_out, release_out

    (tmp_path / ".report.docx.tmp").write_text("mine")
    (tmp_path / ".cache.tmp").mkdir()
    (tmp_path / ".lesson_net_epoch01.pt.k2j3h4.tmp").write_bytes(b"half a checkpoint")
    own_out(tmp_path)
    release_out(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".cache.tmp", ".report.docx.tmp"]


@pytest.mark.skipif(sys.platform == "win32", reason="no advisory locks on Windows")
def test_a_refused_run_removes_no_other_runs_log(tmp_path):
    """--overwrite removes an earlier run's events only once this run owns --out: a run that is
    refused because another one trains into the same --out leaves that run's log alone."""
    import fcntl

    from cifar_course.engine import RunConfig, refuse_to_overwrite

    out, logdir = tmp_path / "o", tmp_path / "l"
    out.mkdir()
    logdir.mkdir()
    events = logdir / "events.out.tfevents.1.host"
    events.write_bytes(b"the other run's curves")
    other = os.open(out, os.O_RDONLY)  # the other run's lock on --out
    fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
    try:
        run = RunConfig(out=str(out), logdir=str(logdir), overwrite=True)
        with pytest.raises(CourseError, match="is in use by another training run"):
            refuse_to_overwrite(run, str(logdir), "lesson_net", 0, 1, None)
    finally:
        os.close(other)
    assert events.read_bytes() == b"the other run's curves"


def test_a_full_log_disk_is_one_line_naming_the_log_folder(
    data_root, tmp_path, capsys, monkeypatch
):
    """TensorBoard writes in a thread of its own, which dies with a traceback when the disk is
    full, and its next call raises an error that names no file: one line, naming --logdir."""
    import errno

    from tensorboard.summary.writer import record_writer

    def full(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(record_writer.RecordWriter, "write", full)
    args = ["train", "--epochs", "2", "--batch-size", "500", "--out", str(tmp_path / "o")]
    assert main([*args, "--logdir", str(tmp_path / "l")]) == 1
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip() and "it/s" not in line]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert f"cannot use '{tmp_path / 'l'}': the disk is full" in lines[0]


CRAFTED_MODELS = {
    "a Tudui in float64": None,  # made by a script, below
    "arch as a list": lambda s: {**s, "arch": ["lesson_net"]},
    "a format and nothing else": lambda s: {"format": s["format"]},
    "weights as a list": lambda s: {**s, "model": [1, 2]},
    "a key that is a number": lambda s: {**s, "model": {**s["model"], 7: torch.zeros(1)}},
    "float8 weights": lambda s: {
        **s,
        "model": {**s["model"], "conv1.bias": s["model"]["conv1.bias"].to(torch.float8_e4m3fn)},
    },
    "an expanded tensor": lambda s: {
        **s,
        "model": {**s["model"], "huge": torch.zeros(1).expand(2**40)},
    },
}


@pytest.mark.parametrize("case", list(CRAFTED_MODELS))
def test_a_crafted_model_file_is_one_line_for_evaluate(tmp_path, capsys, case):
    """Files past the first checks still end in one line (a Tudui saved in float64 loads)."""
    if CRAFTED_MODELS[case] is None:
        from test_lecture import SEQUENTIAL, run_python

        (tmp_path / "model.py").write_text(SEQUENTIAL.format(attr="model1"))
        run_python(
            tmp_path,
            "import torch\nfrom model import Tudui\ntorch.save(Tudui().double(), 'tudui_0.pth')\n",
        )
        assert main(["export", str(tmp_path / "tudui_0.pth"), str(tmp_path / "e.pt")]) == 0
        return
    state = torch.load(lecture_checkpoint(tmp_path / "good.pt"), weights_only=True)
    torch.save(CRAFTED_MODELS[case](state), tmp_path / "bad.pt")
    assert main(["evaluate", "--checkpoint", str(tmp_path / "bad.pt")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "bad.pt" in err[0], err


def test_python_callers_get_one_clear_error_for_settings_of_the_wrong_kind(tmp_path):
    from cifar_course.engine import RunConfig, fit
    from cifar_course.recipes.lecture import Lecture, LectureHyper
    from cifar_course.recipes.modern import ModernHyper

    run = RunConfig(out=str(tmp_path / "o"), logdir=str(tmp_path / "l"))
    for hyper, message in (
        (LectureHyper(epochs="2"), "--epochs must be a whole number, got '2'"),
        (LectureHyper(epochs=1.5), "--epochs must be a whole number, got 1.5"),
        (LectureHyper(fast="no"), "--fast must be a bool, got 'no'"),
        (LectureHyper(log_every=0), "log_every must be at least 1"),
        (ModernHyper(), "the lecture recipe takes LectureHyper, not ModernHyper"),
    ):
        with pytest.raises(CourseError, match=re.escape(message)):
            fit(Lecture, run, hyper)
    with pytest.raises(CourseError, match=re.escape("--seed must be a whole number, got '1'")):
        fit(Lecture, RunConfig(out=str(tmp_path / "o"), seed="1"), LectureHyper())
    assert not (tmp_path / "o").exists() and not (tmp_path / "l").exists()


def test_odd_names_and_links_are_one_line(tmp_path, capsys):
    """A symlink loop as --out; a file name that is not UTF-8 on a strict UTF-8 terminal."""
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    assert main(["train", "--out", str(tmp_path / "loop"), "--logdir", str(tmp_path / "l")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is a link that leads nowhere" in err[0], err
    run = subprocess.run(
        [sys.executable, "-m", "cifar_course", "evaluate", "--checkpoint", b"bad\xffname.pt"],
        capture_output=True,
        env=dict(os.environ, PYTHONIOENCODING="utf-8:strict"),
    )
    lines = run.stderr.decode("utf-8", "replace").strip().splitlines()
    assert run.returncode == 1 and len(lines) == 1 and "does not exist" in lines[0], lines


@pytest.mark.parametrize("force", [[], ["--force"]])
def test_export_leaves_a_link_that_leads_nowhere_alone(tmp_path, capsys, force):
    """A dangling link (or one to itself) at OUT is not a file to replace, with or without
    --force: one line, and the link stays."""
    good = save_state_dict(LessonNet(), tmp_path / "m.pth")
    for name, target in (("dangling.pt", tmp_path / "gone.pt"), ("loop.pt", tmp_path / "loop.pt")):
        (tmp_path / name).symlink_to(target)
        assert main(["export", str(good), str(tmp_path / name), *force]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "is a link that leads nowhere" in err[0], err
        assert (tmp_path / name).is_symlink() and not (tmp_path / name).exists()
