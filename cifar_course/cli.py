"""The ``cifar-course`` command line: data, train, benchmark, evaluate, export, predict."""

from __future__ import annotations

import argparse
import math
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from .errors import CourseError
from .speedrun import DEFAULTS as SPEEDRUN_DEFAULTS
from .training import TrainConfig

# the speed-run recipe's defaults, on a GPU (True) and elsewhere (False)
SPEEDRUN = {device == "cuda": d for device, d in SPEEDRUN_DEFAULTS.items()}


def _number(
    convert: Callable[[str], Any], fits: Callable[[Any], bool], rule: str
) -> Callable[[str], Any]:
    """An argparse ``type``: ``convert`` the text, then require ``fits``, else say ``rule``."""

    def parse(text: str) -> Any:
        try:
            value = convert(text)
        except ValueError:
            kind = "a whole number" if convert is int else "a number"
            raise argparse.ArgumentTypeError(f"expected {kind}, got '{text}'") from None
        if not fits(value):
            raise argparse.ArgumentTypeError(f"{rule}, got {text}")
        return value

    return parse


# counts of images, epochs or classes; learning rates; seeds that torch and NumPy both accept
at_least_one = _number(int, lambda n: n >= 1, "must be at least 1")
positive = _number(float, lambda x: 0 < x < math.inf, "must be a positive number")
seed = _number(int, lambda n: 0 <= n < 2**32, "must be from 0 to 4294967295")


def say(message: str) -> None:
    """Notes about what was loaded go to stderr, so that stdout keeps only the results."""
    print(message, file=sys.stderr)


def cmd_data(args: argparse.Namespace) -> int:
    from .data import BASE_FOLDER, CLASSES, check_data

    root, n_train, n_test = check_data()
    print(f"CIFAR-10 found in {(root / BASE_FOLDER).resolve()}")
    print(f"all files intact: {n_train:,} train and {n_test:,} test images, {len(CLASSES)} classes")
    print("classes: " + ", ".join(CLASSES))
    return 0


RECIPE_DEFAULTS: dict[str, dict[str, Any]] = {
    "lecture": {"epochs": 10, "batch_size": 64, "lr": 1e-2, "logdir": "runs/lesson_net"},
    "modern": {"epochs": 12, "batch_size": 512, "lr": 0.2, "logdir": "runs/modern_net"},
    "speedrun": {"logdir": "runs/speed_net"},  # epochs, batch and lr: by device, see speedrun.py
}


def cmd_train(args: argparse.Namespace) -> int:
    if args.fast and args.recipe != "lecture":
        raise CourseError(
            f"--fast selects the fast loop for the lecture recipe; the {args.recipe} recipe always "
            "trains with its data in memory and channels_last. Leave out --fast."
        )
    if args.ema and args.recipe != "speedrun":
        raise CourseError(
            f"--ema adds a weight average to the speedrun recipe; the {args.recipe} recipe has "
            "none. Leave out --ema, or add --recipe speedrun."
        )
    if not args.lookahead and args.recipe != "speedrun":
        raise CourseError(
            f"--no-lookahead switches off the speedrun recipe's lookahead; the {args.recipe} "
            "recipe has none. Leave out --no-lookahead, or add --recipe speedrun."
        )
    if args.precision is not None and args.recipe != "speedrun":
        raise CourseError(
            f"--precision chooses the speedrun recipe's precision; the {args.recipe} recipe has "
            "none to choose. Leave out --precision, or add --recipe speedrun."
        )
    defaults = RECIPE_DEFAULTS[args.recipe]
    if args.recipe == "speedrun":
        from .device import pick_device

        defaults = {**SPEEDRUN[pick_device(args.device).type == "cuda"], **defaults}
    batch_size = defaults["batch_size"] if args.batch_size is None else args.batch_size
    lr = args.lr
    if lr is None:
        lr = defaults["lr"]
        if args.recipe == "speedrun":  # airbench's learning rate is per image: scale it
            lr *= batch_size / defaults["batch_size"]
    config = TrainConfig(
        epochs=defaults["epochs"] if args.epochs is None else args.epochs,
        batch_size=batch_size,
        lr=lr,
        device=args.device,
        seed=args.seed,
        out=args.out,
        logdir=args.logdir or defaults["logdir"],
        resume=args.resume,
        init_from=args.init_from,
        trust_pickle=args.trust_pickle,
        fast=args.fast,
        recipe=args.recipe,
        ema=args.ema,
        lookahead=args.lookahead,
        precision=args.precision or "auto",
        overwrite=args.overwrite,
    )
    if args.recipe == "modern":
        from .modern import fit_modern

        fit_modern(config)
    elif args.recipe == "speedrun":
        from .speedrun import fit_speedrun

        fit_speedrun(config)
    else:
        from .training import fit

        fit(config)
    return 0


def cmd_benchmark(args: argparse.Namespace) -> int:
    from .benchmark import run_benchmark

    run_benchmark(args.device, args.epochs, args.batch_size, args.lr, args.seed)
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from torch.utils.data import DataLoader
    from torchvision import transforms

    from .checkpoints import load_model
    from .data import CIFAR10, CLASSES
    from .device import pick_device
    from .training import per_class_accuracy, predict_all

    device = pick_device(args.device)
    model = load_model(args.checkpoint, device, args.trust_pickle, log=say)
    test_set = CIFAR10(train=False, transform=transforms.ToTensor())
    loader = DataLoader(test_set, batch_size=args.batch_size)
    _, predicted, targets = predict_all(model, loader, device)
    accuracy = (predicted == targets).float().mean().item()
    print(f"test accuracy of {args.checkpoint}: {accuracy:.2%} on {len(targets):,} images")
    for name, acc in zip(CLASSES, per_class_accuracy(predicted, targets), strict=True):
        print(f"  {name:<10} {acc:.2%}")
    if args.tta:
        from .data import TensorData
        from .modern import evaluate_tta

        views = evaluate_tta(model, TensorData(False, device), args.batch_size)
        print(
            f"with test-time augmentation: {views['flip']:.2%} (flip), "
            f"{views['flip_shift']:.2%} (flip-and-shift)"
        )
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .checkpoints import export_state_dict

    export_state_dict(args.checkpoint, args.out, args.layout, args.trust_pickle, args.force)
    return 0


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def one_line(text: object) -> str:
    """``text`` with its control characters written as escapes (a newline as ``\\n``): a file
    name holding one cannot break a result or an error over two lines, nor forge a line."""
    return _CONTROL.sub(lambda m: repr(m.group())[1:-1], str(text))


def cmd_predict(args: argparse.Namespace) -> int:
    from .checkpoints import load_model
    from .inference import predict

    model = load_model(args.checkpoint, trust_pickle=args.trust_pickle, log=say)
    failures = 0
    for path in args.images:
        try:
            top = predict(model, path, k=args.top)
        except CourseError as exc:
            failures += 1
            print(f"error: {one_line(exc)}", file=sys.stderr)
            continue
        rest = "  ".join(f"{name} {p:.1%}" for name, p in top[1:])
        print(f"{one_line(path)}\t{top[0][0]}\t{top[0][1]:.1%}" + (f"\t({rest})" if rest else ""))
    if failures:
        print(
            f"error: {failures} of {len(args.images)} images could not be classified",
            file=sys.stderr,
        )
        return 1
    return 0


def add_trust_flag(parser: argparse.ArgumentParser) -> None:
    """The opt-in that lets a command load a whole-model pickle."""
    parser.add_argument(
        "--trust-pickle",
        action="store_true",
        help="allow a whole-model pickle; it can run code, so only for files you trust",
    )


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line, like the course's own, without the usage
    block that argparse prints first (``--help`` still shows it); sub-commands inherit it."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with one sub-command per job."""
    defaults = TrainConfig()
    parser = OneLineParser(
        prog="cifar-course", description="The cifar-course helpers: CIFAR-10 with PyTorch."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("data", help="find CIFAR-10 and check that it is complete and intact")
    p.set_defaults(func=cmd_data)

    p = sub.add_parser(
        "train",
        help="train the lesson net (the lecture's recipe by default)",
        description="Train a network on CIFAR-10. Under torchrun (torchrun --nproc-per-node N "
        "-m cifar_course train ...) it trains one model with DistributedDataParallel: N "
        "processes, rank 0 printing, logging and saving.",
    )
    p.add_argument(
        "--recipe",
        choices=["lecture", "modern", "speedrun"],
        default="lecture",
        help="lecture: the lesson net as taught; modern: lesson 06's network and recipe; "
        "speedrun: lesson 08's (airbench94's widths on a GPU, half of them on a CPU)",
    )
    p.add_argument(
        "--epochs",
        type=int,
        help=f"default: 10 (lecture), 12 (modern), {SPEEDRUN[False]['epochs']} / "
        f"{SPEEDRUN[True]['epochs']} (speedrun on a CPU / GPU)",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        help=f"default: 64 (lecture), 512 (modern), {SPEEDRUN[False]['batch_size']} / "
        f"{SPEEDRUN[True]['batch_size']} (speedrun on a CPU / GPU); under torchrun the global "
        "batch, split evenly over the processes",
    )
    p.add_argument(
        "--lr",
        type=float,
        help="SGD (peak) learning rate; default 0.01 (lecture), 0.2 (modern), "
        f"{SPEEDRUN[False]['lr']} / {SPEEDRUN[True]['lr']} (speedrun on a CPU / GPU, at its "
        "default batch size; scaled with --batch-size)",
    )
    p.add_argument(
        "--device",
        default=defaults.device,
        choices=["auto", "cpu", "cuda", "mps"],
        help="default: %(default)s (cuda, then mps, then cpu)",
    )
    p.add_argument("--seed", type=seed, default=defaults.seed, help="default: %(default)s")
    p.add_argument(
        "--out",
        default=defaults.out,
        metavar="DIR",
        help="folder for the per-epoch checkpoints (%(default)s)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an earlier run's checkpoints in --out and its TensorBoard events in "
        "--logdir (without it, a run that would write over them refuses to start)",
    )
    p.add_argument(
        "--logdir",
        metavar="DIR",
        help="TensorBoard log folder (default: runs/lesson_net, runs/modern_net or runs/speed_net)",
    )
    p.add_argument(
        "--resume",
        metavar="CHECKPOINT",
        help="continue from a checkpoint written by an earlier run",
    )
    p.add_argument(
        "--init-from",
        metavar="FILE",
        help="start a new run (epoch 1, new optimizer) from the weights in FILE: any checkpoint, "
        "state_dict or lecture file that evaluate accepts",
    )
    p.add_argument(
        "--fast",
        action="store_true",
        help="lecture recipe, faster loop: data in memory, channels_last, mixed precision",
    )
    p.add_argument(
        "--ema",
        action="store_true",
        help="speedrun: evaluate and save an exponential moving average of the weights instead of "
        "the last weights (lesson 08 measures whether it pays)",
    )
    p.add_argument(
        "--no-lookahead",
        dest="lookahead",
        action="store_false",
        help="speedrun: train without the lookahead (every 5 steps, the weights are pulled back "
        "towards a slow average of themselves)",
    )
    p.add_argument(
        "--precision",
        choices=("auto", "fp32", "bf16"),
        help="speedrun: fp32, or bf16 autocast (refused where it cannot run well); auto, the "
        "default: bf16 on CUDA GPUs of compute capability 8 or newer and on CPUs where a few timed "
        "steps find it at least 1.15x as fast. A resumed run keeps its checkpoint's precision.",
    )
    add_trust_flag(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("benchmark", help="time the lecture's loop against the fast loop")
    p.add_argument(
        "--epochs",
        type=at_least_one,
        default=1,
        help="epochs per loop (%(default)s); 10 compares the recipe's accuracy too",
    )
    p.add_argument(
        "--batch-size", type=at_least_one, default=defaults.batch_size, help="default: %(default)s"
    )
    p.add_argument("--lr", type=positive, default=defaults.lr, help="default: %(default)s")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    p.add_argument("--seed", type=seed, default=defaults.seed, help="default: %(default)s")
    p.set_defaults(func=cmd_benchmark)

    p = sub.add_parser("evaluate", help="test accuracy of a checkpoint, overall and per class")
    p.add_argument("--checkpoint", required=True, metavar="PATH")
    p.add_argument("--batch-size", type=at_least_one, default=256, help="default: %(default)s")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    p.add_argument(
        "--tta",
        action="store_true",
        help="also test with flip and flip-and-shift test-time augmentation (lesson 06)",
    )
    add_trust_flag(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser(
        "export",
        help="write the weights of any accepted file as a plain state_dict",
        description="Write the weights of any file the course loads (a checkpoint, a state_dict, "
        "the lecture's tudui_N.pth) as a plain state_dict. --layout lecture names them "
        "model.0.weight ... model.8.bias, so that the lecture's Tudui().load_state_dict("
        "torch.load(OUT)) accepts the file.",
    )
    p.add_argument("checkpoint", metavar="CHECKPOINT")
    p.add_argument("out", metavar="OUT")
    p.add_argument(
        "--layout",
        choices=["course", "lecture"],
        default="course",
        help="key names: the course's (%(default)s) or the lecture's model.N",
    )
    p.add_argument("--force", action="store_true", help="replace OUT if it exists")
    add_trust_flag(p)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("predict", help="classify image files with a checkpoint")
    p.add_argument("--checkpoint", required=True, metavar="PATH")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument(
        "--top", type=at_least_one, default=3, help="how many classes to show (%(default)s)"
    )
    add_trust_flag(p)
    p.set_defaults(func=cmd_predict)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: run a sub-command; turn a CourseError into one line on stderr and exit 1."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except CourseError as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; the checkpoints already written are intact", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
