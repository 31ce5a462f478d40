"""``--budget``: the choice of network, batch and epochs from the probe's timings (stand-in
timings here), the probe itself, and a budgeted run end to end."""

import itertools
from dataclasses import dataclass

import pytest
import torch

from cifar_course import budget
from cifar_course.budget import MARGIN, MAX_EPOCHS, MIN_EPOCHS, Timing, choose, describe, measure
from cifar_course.cli import main
from cifar_course.engine import RunConfig, fit
from cifar_course.errors import CourseError
from cifar_course.models import SpeedNetMedium
from cifar_course.recipes.speedrun import (
    WEIGHT_DECAY,
    Speedrun,
    SpeedrunHyper,
    make_optimizer,
)


def machine(speed_net: float, medium: float, small: float, test: float = 0.2) -> list[Timing]:
    """Stand-in timings: seconds per step of each network at batch 512 (twice that at 1024), and
    each network's test batch at ``test`` times its step."""
    return [
        Timing(network, batch, step * batch / 512, step * test)
        for network, step in (
            ("speed_net", speed_net),
            ("speed_net_medium", medium),
            ("speed_net_small", small),
        )
        for batch in (512, 1024)
    ]


# Steps per second as measured on two 2-core Intel Xeons with AMX, in bf16 at batch 512
# (benchmarks/2026-11-28-intel-amx/step_time.log and the 2026-12-04 CPU speed-run's probe).
FAST_AMX = machine(0.446, 0.316, 0.193)
SLOW_AMX = machine(1.225, 0.974, 0.457)


def fits(choice: budget.Choice, minutes: float, spent: float) -> None:
    """The chosen epochs fit the budget less its margin, and one more would not (unless capped)."""
    usable = minutes * 60 * (1 - MARGIN)
    assert choice.total_seconds <= usable
    assert choice.train_seconds < choice.total_seconds
    if choice.epochs < MAX_EPOCHS:
        assert choice.timing.run_seconds(choice.epochs + 1, spent)[1] > usable


def test_a_fast_amx_cpu_gets_the_gpu_network_for_as_many_epochs_as_fit():
    choice = choose(10, FAST_AMX, spent=17)
    assert (choice.timing.network, choice.timing.batch_size) == ("speed_net", 512)
    assert choice.epochs >= MIN_EPOCHS
    fits(choice, 10, 17)
    # each network's epochs at its best batch, for the first line's reason
    assert choice.alternatives["speed_net"] == choice.epochs
    assert choice.alternatives["speed_net_small"] > choice.alternatives["speed_net_medium"]


def test_a_slow_cpu_gets_a_narrower_network_that_fits_enough_epochs():
    choice = choose(10, SLOW_AMX, spent=30)
    assert choice.alternatives["speed_net"] < MIN_EPOCHS
    assert choice.alternatives["speed_net_medium"] < MIN_EPOCHS
    assert choice.timing.network == "speed_net_small" and choice.epochs >= MIN_EPOCHS
    fits(choice, 10, 30)
    # A longer budget gives the slow machine the wide network back.
    assert choose(60, SLOW_AMX, spent=30).timing.network == "speed_net"


def test_when_no_network_fits_the_minimum_the_one_with_most_epochs_wins():
    choice = choose(3, SLOW_AMX, spent=30)
    assert choice.timing.network == "speed_net_small"
    assert 1 <= choice.epochs < MIN_EPOCHS
    fits(choice, 3, 30)
    assert f"no network fits {MIN_EPOCHS} epochs" in describe(3, choice, "bf16 autocast")


def test_the_batch_that_fits_more_epochs_wins_and_a_tie_goes_to_the_smaller():
    even = choose(10, FAST_AMX, spent=17)
    assert even.timing.batch_size == 512  # the same time per image: the same epochs
    cheaper = [
        t if t.batch_size == 512 else Timing(t.network, 1024, t.step_seconds * 0.5, t.test_seconds)
        for t in FAST_AMX
    ]
    assert choose(10, cheaper, spent=17).timing.batch_size == 1024


def test_a_gpu_gets_the_widest_network_for_the_most_epochs_budget_trains():
    gpu = machine(0.004, 0.003, 0.002)
    choice = choose(10, gpu, spent=5)
    assert (choice.timing.network, choice.epochs) == ("speed_net", MAX_EPOCHS)
    assert "the most --budget trains" in describe(10, choice, "bf16 autocast")
    assert choice.total_seconds < 60


def test_the_choice_depends_on_the_timings_alone():
    first = choose(10, FAST_AMX, spent=17)
    for order in itertools.islice(itertools.permutations(FAST_AMX), 0, 720, 97):
        assert choose(10, list(order), spent=17) == first


@pytest.mark.parametrize("timings", [FAST_AMX, SLOW_AMX], ids=["fast", "slow"])
def test_a_budget_too_small_names_the_smallest_one_that_fits(timings):
    with pytest.raises(CourseError) as refused:
        choose(0.3, timings, spent=20)
    message = str(refused.value)
    assert "\n" not in message
    smallest = float(message.split("give --budget ")[1].split()[0])
    choice = choose(smallest, timings, spent=20)  # the budget it names is enough...
    assert choice.epochs == 1
    with pytest.raises(CourseError):  # ...and a tenth of a minute less is not
        choose(smallest - 0.1, timings, spent=20)


def test_the_first_line_says_what_was_chosen_and_why():
    choice = choose(10, FAST_AMX, spent=17)
    line = describe(10, choice, "bf16 autocast (bf16 probe, 2.31x fp32)")
    assert line.startswith(
        f"budget 10 min: speed_net (64/256/256), batch 512, {choice.epochs} epochs"
    )
    assert "446 ms/step" in line and "bf16 probe, 2.31x" in line
    assert f"the widest network that fits {MIN_EPOCHS} epochs" in line
    assert f"speed_net_small {choice.alternatives['speed_net_small']}" in line
    assert f"about {choice.train_seconds / 60:.1f} min of training" in line


def test_the_probe_times_every_candidate_and_leaves_the_random_state_alone():
    ticks = itertools.count()
    before = torch.get_rng_state()
    timings = measure(
        torch.device("cpu"),
        bf16=False,
        make_optimizer=lambda model, batch: make_optimizer(model, 0.1, batch),
        networks=("speed_net_small", "speed_net_medium"),
        batches=(4, 8),
        clock=lambda: float(next(ticks)),  # every timed call takes one tick
        test_batch=4,
    )
    assert torch.equal(torch.get_rng_state(), before)
    assert [(t.network, t.batch_size) for t in timings] == [
        ("speed_net_small", 4),
        ("speed_net_small", 8),
        ("speed_net_medium", 4),
        ("speed_net_medium", 8),
    ]
    assert all(t.step_seconds == 1 and t.test_seconds == 1 for t in timings)


@dataclass
class StandInHyper(SpeedrunHyper):
    """The speed-run's settings, with the probe's timings given: the slow machine's, times
    ``scale``."""

    def planned(self, run, device, job, log, probe=None):
        def stand_in(device, bf16, make_optimizer):
            # the optimizer the run will build, at each batch's own learning rate
            for batch in (512, 1024):  # SGD's decay is the recipe's over the peak lr
                group = make_optimizer(SpeedNetMedium(), batch).param_groups[0]
                lrs.append(WEIGHT_DECAY * batch / group["weight_decay"])
            return SLOW_AMX

        return super().planned(run, device, job, log, probe=stand_in)


lrs: list[float] = []


class Budgeted(Speedrun):
    hyper_type = StandInHyper


@pytest.mark.slow
def test_a_budgeted_run_trains_what_its_first_line_says(data_root, tmp_path):
    """On the slice, with the slow machine's timings: 2 minutes fit one epoch of the small
    network; the run trains it, saves its choice in the checkpoint and says how long it took."""
    lines: list[str] = []
    run = RunConfig(out=str(tmp_path / "o"), logdir=str(tmp_path / "l"), device="cpu")
    history = fit(Budgeted, run, StandInHyper(budget=2, precision="fp32"), log=lines.append)
    assert lines[0].startswith("budget 2 min: speed_net_small (32/128/128), batch 512, ")
    epochs = int(lines[0].split("batch 512, ")[1].split()[0])
    assert len(history) == epochs and lines[1].startswith("training speed_net_small")
    assert lines[-1].startswith("budget 2 min: the run took ")
    saved = torch.load(tmp_path / "o" / f"speed_net_small_epoch{epochs:02d}.pt", weights_only=True)
    settings = saved["config"]
    assert (settings["network"], settings["batch_size"], settings["epochs"]) == (
        "speed_net_small",
        512,
        epochs,
    )
    assert settings["lr"] == 0.75 and settings["budget"] == 2
    assert lrs[-2:] == pytest.approx([0.75, 1.5])  # each batch timed at its own learning rate


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--budget", "10", "--epochs", "3"], "leave out --epochs, or leave out --budget"),
        (["--budget", "10", "--network", "speed_net"], "leave out --network"),
        (["--budget", "10", "--lr", "0.5"], "leave out --lr"),
        (["--budget", "0"], "--budget must be a number of minutes above 0"),
        (["--budget", "0.2"], "give --budget 0.5 or more"),
        (["--budget", "nan"], "--budget must be a number of minutes above 0"),
        (["--budget", "inf"], "up to 10,080"),
        (["--budget", "10", "--resume", "x.pt"], "--budget plans a new run"),
        (["--budget", "10", "--init-from", "x.pt"], "--budget plans a run from scratch"),
    ],
)
def test_a_budget_that_cannot_be_planned_is_refused_before_the_probe(
    tmp_path, capsys, args, message
):
    out = tmp_path / "o"
    code = main(
        ["train", "--recipe", "speedrun", "--out", str(out), "--logdir", str(tmp_path / "l"), *args]
    )
    err = capsys.readouterr().err
    assert code == 1 and message in err and err.count("\n") == 1
    assert not out.exists()


def test_budget_is_a_setting_of_the_speedrun_recipe_alone(capsys):
    assert main(["train", "--budget", "3"]) == 1
    assert "--budget is a setting of the speedrun recipe" in capsys.readouterr().err


def test_budget_under_torchrun_is_refused():
    hyper = SpeedrunHyper(budget=10).resolved("cpu")
    with pytest.raises(CourseError, match="--budget plans a run of one process"):
        hyper.planned(RunConfig(), torch.device("cpu"), job=object(), log=print)


@pytest.mark.slow
def test_the_network_can_be_chosen_by_hand_and_a_resume_must_name_it(data_root, tmp_path, capsys):
    base = ["train", "--recipe", "speedrun", "--epochs", "1", "--batch-size", "500", "--lr", "0.05"]
    base += ["--precision", "fp32", "--device", "cpu", "--logdir", str(tmp_path / "l")]
    assert main([*base, "--network", "speed_net_medium", "--out", str(tmp_path / "o")]) == 0
    first = tmp_path / "o" / "speed_net_medium_epoch01.pt"
    assert "training speed_net_medium (widths 48/192/192)" in capsys.readouterr().out
    # resuming it without --network would build the CPU's default network
    more = [*base[:4], "2", *base[5:], "--out", str(tmp_path / "r"), "--resume", str(first)]
    assert main(more) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--network speed_net_medium" in err
    assert main([*more, "--network", "speed_net_medium"]) == 0


def never(*args, **kwargs):
    pytest.fail("the probe ran")


@pytest.mark.parametrize("overwrite", [False, True])
def test_an_earlier_runs_files_are_refused_before_the_probe(tmp_path, overwrite):
    """Whatever network the probe would choose, its checkpoints must not replace an earlier
    run's: without --overwrite the run stops before probing."""
    out = tmp_path / "o"
    out.mkdir()
    (out / "speed_net_medium_epoch03.pt").write_bytes(b"earlier")
    run = RunConfig(out=str(out), logdir=str(tmp_path / "l"), overwrite=overwrite)
    hyper = SpeedrunHyper(budget=10).resolved("cpu")
    if overwrite:  # allowed: the probe runs (here, a stand-in that stops the test)
        with pytest.raises(pytest.fail.Exception, match="the probe ran"):
            hyper.planned(run, torch.device("cpu"), None, print, probe=never)
        return
    with pytest.raises(CourseError, match="already holds speed_net_medium_epoch03.pt"):
        hyper.planned(run, torch.device("cpu"), None, print, probe=never)
    assert (out / "speed_net_medium_epoch03.pt").read_bytes() == b"earlier"


def test_a_network_that_is_not_a_speed_run_network_is_refused():
    with pytest.raises(CourseError, match="speedrun network = 'modern_net'"):
        SpeedrunHyper(network="modern_net").resolved("cpu").validate()


@pytest.mark.slow
def test_a_checkpoint_is_resumed_at_its_own_batch_size(data_root, tmp_path, capsys):
    base = ["train", "--recipe", "speedrun", "--lr", "0.05", "--precision", "fp32"]
    base += ["--device", "cpu", "--logdir", str(tmp_path / "l")]
    assert main([*base, "--epochs", "1", "--batch-size", "500", "--out", str(tmp_path / "o")]) == 0
    first = str(tmp_path / "o" / "speed_net_small_epoch01.pt")
    again = [*base, "--epochs", "2", "--out", str(tmp_path / "r"), "--resume", first]
    capsys.readouterr()
    assert main([*again, "--batch-size", "250"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "resume it with --batch-size 500" in err
    assert main([*again, "--batch-size", "500"]) == 0
