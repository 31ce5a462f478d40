import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cifar_course.checkpoints import save_state_dict, save_whole_model
from cifar_course.cli import main
from cifar_course.models import LessonNet

IMAGES = Path(__file__).resolve().parents[1] / "cifar_course" / "images"


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cifar_course", *args], capture_output=True, text=True
    )


@pytest.mark.parametrize("command", [[], ["data"], ["train"], ["evaluate"], ["predict"]])
def test_help(command, capsys):
    with pytest.raises(SystemExit) as info:
        main([*command, "--help"])
    assert info.value.code == 0
    assert "usage: cifar-course" in capsys.readouterr().out


def test_data_command(data_root, capsys):
    assert main(["data"]) == 0
    out = capsys.readouterr().out
    assert "50,000 train and 10,000 test images, 10 classes" in out


def test_data_command_without_data(tmp_path):
    run = subprocess.run(
        [sys.executable, "-m", "cifar_course", "data"],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "CIFAR_COURSE_DATA": str(tmp_path)},
    )
    assert run.returncode == 1
    assert run.stderr.startswith("error:") and "Traceback" not in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1


def test_train_evaluate_predict(data_root, tmp_path, capsys):
    out, logs = tmp_path / "ck", tmp_path / "tb"
    assert main(["train", "--epochs", "1", "--out", str(out), "--logdir", str(logs)]) == 0
    text = capsys.readouterr().out
    assert "epoch  1/1" in text and "final test accuracy:" in text.splitlines()[-1]
    checkpoint = str(out / "lesson_net_epoch01.pt")
    assert main(["evaluate", "--checkpoint", checkpoint]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("test accuracy of") and "1,000 images" in lines[0]
    assert [line.split()[0] for line in lines[1:]][:2] == ["airplane", "automobile"]
    assert len(lines) == 11
    assert (
        main(
            [
                "predict",
                "--checkpoint",
                checkpoint,
                str(IMAGES / "cat.png"),
                str(IMAGES / "deer.jpg"),
            ]
        )
        == 0
    )
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and lines[0].startswith(str(IMAGES / "cat.png") + "\t")
    assert lines[0].split("\t")[2].endswith("%")


@pytest.mark.slow
def test_whole_model_needs_trust_flag(tmp_path):
    checkpoint = save_whole_model(LessonNet(), tmp_path / "whole.pth")
    refused = run_cli("predict", "--checkpoint", str(checkpoint), str(IMAGES / "dog.jpg"))
    assert refused.returncode == 1 and "--trust-pickle" in refused.stderr
    assert "Traceback" not in refused.stderr
    allowed = run_cli(
        "predict", "--trust-pickle", "--checkpoint", str(checkpoint), str(IMAGES / "dog.jpg")
    )
    assert allowed.returncode == 0, allowed.stderr


def assert_one_clear_line(stderr: str, message: str) -> None:
    """What the README promises for every error: one line on stderr, naming the problem."""
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["--epochs", "0"], "--epochs"),
        (["--epochs", "-3"], "--epochs"),
        (["--batch-size", "0"], "--batch-size"),
        # the speed-run's defaults depend on the device: 0 must not stand for "the default"
        (["--recipe", "speedrun", "--epochs", "0"], "--epochs must be from 1"),
        (["--recipe", "speedrun", "--batch-size", "0"], "--batch-size must be from 1"),
        (["--recipe", "modern", "--lr", "0"], "--lr must be a positive number"),
    ],
)
def test_bad_training_arguments_write_nothing(tmp_path, capsys, args, message):
    out = tmp_path / "ck"
    assert main(["train", *args, "--out", str(out), "--logdir", str(tmp_path / "tb")]) == 1
    assert_one_clear_line(capsys.readouterr().err, message)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda(tmp_path, capsys):
    assert (
        main(
            [
                "train",
                "--device",
                "cuda",
                "--out",
                str(tmp_path / "ck"),
                "--logdir",
                str(tmp_path / "tb"),
            ]
        )
        == 1
    )
    assert_one_clear_line(capsys.readouterr().err, "no CUDA GPU")
    assert list(tmp_path.iterdir()) == []


def test_train_fast_flag_reaches_the_fast_loop(data_root, tmp_path, capsys):
    args = [
        "train",
        "--fast",
        "--epochs",
        "1",
        "--out",
        str(tmp_path / "ck"),
        "--logdir",
        str(tmp_path / "tb"),
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "(fast loop)" in out and "final test accuracy:" in out


def settings(*args: str) -> tuple[type, object, object]:
    """What ``cifar-course train ARGS`` would train: (recipe, run settings, hyper-parameters)."""
    from cifar_course.cli import build_parser, train_settings

    return train_settings(build_parser().parse_args(["train", *args]))


def test_each_recipe_has_its_own_defaults():
    from cifar_course.recipes.lecture import Lecture
    from cifar_course.recipes.modern import Modern

    recipe, run, lecture = settings()
    assert recipe is Lecture and run.logdir is None and Lecture.logdir == "runs/lesson_net"
    assert (lecture.epochs, lecture.batch_size, lecture.lr, lecture.fast) == (10, 64, 1e-2, False)
    recipe, run, modern = settings("--recipe", "modern")
    assert recipe is Modern and Modern.logdir == "runs/modern_net"
    assert (modern.epochs, modern.batch_size, modern.lr) == (12, 512, 0.2)
    _, _, chosen = settings("--recipe", "modern", "--epochs", "3", "--lr", "0.1")
    assert (chosen.epochs, chosen.batch_size, chosen.lr) == (3, 512, 0.1)


def test_the_speedrun_recipe_takes_its_defaults_from_the_device():
    """The same settings from Python and from the command line: the recipe's dataclass resolves
    them for the device, with the learning rate scaled per image of the batch."""
    from cifar_course.recipes.speedrun import Speedrun, SpeedrunHyper

    recipe, _, hyper = settings("--recipe", "speedrun")
    assert recipe is Speedrun and Speedrun.logdir == "runs/speed_net"
    on_cpu, on_gpu = hyper.resolved("cpu"), hyper.resolved("cuda")
    assert (on_cpu.epochs, on_cpu.batch_size, on_cpu.lr) == (9, 512, 0.75)
    assert (on_gpu.epochs, on_gpu.batch_size, on_gpu.lr) == (10, 1024, 1.5)
    assert on_cpu.precision == "auto" and on_cpu.lookahead and not on_cpu.ema
    small = settings("--recipe", "speedrun", "--batch-size", "256")[2].resolved("cuda")
    assert (small.epochs, small.batch_size, small.lr) == (10, 256, 1.5 / 4)  # per image
    assert SpeedrunHyper(batch_size=256).resolved("cuda") == small  # the same from Python
    assert settings("--recipe", "speedrun", "--ema")[2].ema
    assert not settings("--recipe", "speedrun", "--no-lookahead")[2].lookahead
    assert settings("--recipe", "speedrun", "--precision", "bf16")[2].precision == "bf16"
    muon = SpeedrunHyper(optimizer="muon").resolved("cpu")  # Muon's own, on any device
    assert (muon.epochs, muon.batch_size, muon.lr) == (8, 2000, 0.24)


def test_train_help_shows_each_recipes_real_defaults(capsys):
    """--help's defaults come from the recipes' dataclasses, so they cannot drift from them."""
    from cifar_course.recipes.lecture import LectureHyper
    from cifar_course.recipes.modern import ModernHyper
    from cifar_course.recipes.speedrun import SpeedrunHyper

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    cpu, gpu = SpeedrunHyper.BY_DEVICE["cpu"], SpeedrunHyper.BY_DEVICE["cuda"]
    assert (
        f"default: {LectureHyper().epochs} (lecture), {ModernHyper().epochs} (modern), "
        f"{cpu['epochs']} / {gpu['epochs']} (speedrun on a CPU / GPU)" in text
    )
    assert f"{LectureHyper().lr} (lecture), {ModernHyper().lr} (modern)" in text
    assert "--no-lookahead speedrun: switch off lookahead" in text


def test_the_top_level_help_loads_no_recipe_and_no_tensorboard():
    """cifar-course --help answers at once: it imports neither PyTorch's recipes nor
    TensorBoard (a fresh interpreter, as the command runs)."""
    script = (
        "import sys\n"
        "from cifar_course.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "loaded = [m for m in sys.modules if m.startswith(('cifar_course.recipes', 'torch', "
        "'tensorboard'))]\n"
        "print(loaded)"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.parametrize("recipe", ["modern", "speedrun"])
def test_fast_with_another_recipe_is_refused_before_anything_runs(capsys, tmp_path, recipe):
    out = tmp_path / "ck"
    assert main(["train", "--recipe", recipe, "--fast", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert_one_clear_line(err, f"--fast is a setting of the lecture recipe; the {recipe} recipe")
    assert "Leave out --fast, or add --recipe lecture" in err
    assert not out.exists()


@pytest.mark.parametrize("recipe", ["lecture", "modern"])
@pytest.mark.parametrize("flag", ["--ema", "--no-lookahead", "--precision=fp32"])
def test_the_speedrun_switches_with_another_recipe_are_refused_before_anything_runs(
    capsys, tmp_path, recipe, flag
):
    out = tmp_path / "ck"
    assert main(["train", "--recipe", recipe, flag, "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert f"the {recipe} recipe has none" in err and f"Leave out {flag.split('=')[0]}" in err
    assert len(err.strip().splitlines()) == 1
    assert not out.exists()


@pytest.mark.slow
def test_training_refuses_to_replace_an_earlier_runs_checkpoint_unless_told(
    data_root, tmp_path, capsys
):
    out = tmp_path / "ck"
    args = ["train", "--epochs", "1", "--out", str(out), "--logdir", str(tmp_path / "tb")]
    assert main(args) == 0
    first = out / "lesson_net_epoch01.pt"
    saved = first.read_bytes()
    capsys.readouterr()
    assert main([*args, "--seed", "5"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: --out") and "lesson_net_epoch01.pt" in err, err
    assert "--overwrite" in err and len(err.strip().splitlines()) == 1
    assert first.read_bytes() == saved  # nothing already saved is lost
    # a run that starts from that file may not write over it, even when told to overwrite
    again = [*args, "--init-from", str(first), "--overwrite"]
    assert main(again) == 1
    assert "--init-from" in capsys.readouterr().err and first.read_bytes() == saved
    assert main([*args, "--seed", "5", "--overwrite"]) == 0
    assert first.read_bytes() != saved


def test_a_run_whose_loss_stops_being_a_number_saves_nothing(data_root, tmp_path, capsys):
    out = tmp_path / "ck"
    args = ["train", "--epochs", "1", "--out", str(out), "--logdir", str(tmp_path / "tb")]
    assert main([*args, "--lr", "1000"]) == 1
    err = capsys.readouterr().err
    assert "the training loss became nan in epoch 1" in err and "lower --lr" in err, err
    assert not (out / "lesson_net_epoch01.pt").exists()
    # the retry it advises runs: a lower --lr, with --overwrite for the failed run's log
    assert "add --overwrite" in err
    assert main([*args, "--lr", "0.01", "--overwrite"]) == 0
    assert (out / "lesson_net_epoch01.pt").exists()
    capsys.readouterr()
    assert main([*args, "--lr", "inf"]) == 1
    assert "--lr must be a positive number up to 1000, got inf" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args, message",
    [
        (["predict", "--checkpoint", "x.pt", "--top", "0", "dog.jpg"], "--top: must be at least 1"),
        (["evaluate", "--checkpoint", "x.pt", "--batch-size", "0"], "--batch-size: must be from 1"),
        (["evaluate", "--checkpoint", "x.pt", "--batch-size", "99999999999999999999"], "50,000"),
        (["train", "--seed", "-1"], "--seed: must be from 0 to 4294967295, got -1"),
        (["train", "--seed", "4294967296"], "--seed: must be from 0 to 4294967295"),
        (["benchmark", "--lr", "-1"], "--lr: must be a positive number up to 1000, got -1"),
        (["benchmark", "--lr", "0"], "--lr: must be a positive number"),
        (["benchmark", "--lr", "1e308"], "--lr: must be a positive number up to 1000"),
        (["benchmark", "--epochs", "200000"], "--epochs: must be from 1 to 100,000"),
        (["benchmark", "--seed", "-1"], "--seed: must be from 0"),
    ],
)
def test_numbers_out_of_range_are_refused_by_the_parser_without_a_traceback(
    tmp_path, args, message
):
    run = subprocess.run(
        [sys.executable, "-m", "cifar_course", *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert run.returncode == 2
    assert message in run.stderr and "Traceback" not in run.stderr, run.stderr
    assert len(run.stderr.splitlines()) == 1 and "--help)" in run.stderr, run.stderr
    assert list(tmp_path.iterdir()) == []


def test_resuming_from_plain_weights_points_to_init_from(tmp_path, capsys):
    weights = save_state_dict(LessonNet(), tmp_path / "w.pth")
    args = ["train", "--resume", str(weights), "--out", str(tmp_path / "ck")]
    assert main([*args, "--logdir", str(tmp_path / "tb")]) == 1
    err = capsys.readouterr().err
    assert "cannot resume from it" in err and "use --init-from instead of --resume" in err


@pytest.mark.slow
def test_a_new_run_refuses_an_earlier_runs_tensorboard_events_but_a_resumed_one_adds_to_them(
    data_root, tmp_path, capsys
):
    logs = tmp_path / "tb"
    first = ["train", "--epochs", "1", "--out", str(tmp_path / "a"), "--logdir", str(logs)]
    assert main(first) == 0
    earlier = sorted(logs.glob("events.out.tfevents.*"))
    assert len(earlier) == 1
    second = ["train", "--epochs", "1", "--out", str(tmp_path / "b"), "--logdir", str(logs)]
    capsys.readouterr()
    assert main(second) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: --logdir") and "--overwrite" in err, err
    assert sorted(logs.glob("events.out.tfevents.*")) == earlier  # nothing removed
    assert not (tmp_path / "b").exists()
    checkpoint = str(tmp_path / "a" / "lesson_net_epoch01.pt")
    resumed = [*first[:2], "2", *first[3:], "--resume", checkpoint]
    assert main(resumed) == 0  # a resumed run goes on in its own run's folder
    assert main([*second, "--overwrite"]) == 0
    now = sorted(logs.glob("events.out.tfevents.*"))
    assert len(now) == 1 and not set(now) & set(earlier)


def test_an_unwritable_default_logdir_is_refused_before_anything_is_written(
    tmp_path, capsys, monkeypatch
):
    """The recipe's default --logdir (runs/lesson_net) is checked like a given one: here a file
    named runs stands in its way."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").write_text("not a folder")
    assert main(["train", "--out", str(tmp_path / "ck")]) == 1
    assert_one_clear_line(capsys.readouterr().err, "--logdir 'runs/lesson_net': 'runs' is a file")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"]
