"""The ``cifar-course`` command line: data, train, benchmark, evaluate, export, predict."""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from .errors import CourseError, os_error_message
from .limits import MAX_BATCH, MAX_EPOCHS, MAX_LR

if TYPE_CHECKING:
    from .engine import Hyper, Recipe, RunConfig


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
epochs = _number(int, lambda n: 1 <= n <= MAX_EPOCHS, f"must be from 1 to {MAX_EPOCHS:,}")
batch = _number(int, lambda n: 1 <= n <= MAX_BATCH, f"must be from 1 to {MAX_BATCH:,}")
rate = _number(float, lambda x: 0 < x <= MAX_LR, f"must be a positive number up to {MAX_LR:g}")
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


def cmd_train(args: argparse.Namespace) -> int:
    from .engine import fit

    recipe, run, hyper = train_settings(args)
    fit(recipe, run, hyper)
    return 0


def _flag(field: Any) -> str:
    """The command-line flag of a settings field: ``--name``, or ``--no-name`` for a switch
    that is on by default."""
    name = field.name.replace("_", "-")
    return f"--no-{name}" if field.default is True else f"--{name}"


def _recipe_fields() -> dict[str, list[tuple[str, Any]]]:
    """Each flag-carrying hyper-parameter field, with the recipes that have it: field name ->
    [(recipe name, the recipe's field)]."""
    from dataclasses import fields

    from . import recipes

    owners: dict[str, list[tuple[str, Any]]] = {}
    for name in recipes.NAMES:
        for field in fields(recipes.get(name).hyper_type):
            if field.metadata.get("help"):
                owners.setdefault(field.name, []).append((name, field))
    return owners


def train_settings(args: argparse.Namespace) -> tuple[type[Recipe], RunConfig, Hyper]:
    """The recipe, run settings and hyper-parameters that ``cifar-course train``'s parsed
    ``args`` ask for. A flag of another recipe is refused in one line."""
    from dataclasses import fields

    from . import recipes
    from .engine import RunConfig

    recipe = recipes.get(args.recipe)
    given: dict[str, Any] = {}
    for name, owned in _recipe_fields().items():
        value = getattr(args, name)
        if value is None:
            continue
        if args.recipe not in (owner for owner, _ in owned):
            flag, owner = _flag(owned[0][1]), owned[0][0]
            raise CourseError(
                f"{flag} is a setting of the {owner} recipe; the {args.recipe} recipe has none. "
                f"Leave out {flag}, or add --recipe {owner}."
            )
        given[name] = value
    run = RunConfig(**{field.name: getattr(args, field.name) for field in fields(RunConfig)})
    return recipe, run, recipe.hyper_type(**given)


def _default_words(recipe: str, field: Any, hyper_type: Any) -> str:
    """How ``--help`` states a recipe's default of ``field``."""
    if field.default is None and field.name in getattr(hyper_type, "BY_DEVICE", {}).get("cpu", {}):
        cpu, gpu = (hyper_type.BY_DEVICE[d][field.name] for d in ("cpu", "cuda"))
        note = field.metadata.get("note")
        return f"{cpu} / {gpu} ({recipe} on a CPU / GPU{'; ' + note if note else ''})"
    return f"{'none' if field.default is None else field.default} ({recipe})"


def _argparse_options(field: Any) -> dict[str, Any]:
    """What a settings field's metadata passes on to argparse."""
    return {k: v for k, v in field.metadata.items() if k in ("choices", "metavar")}


def add_train_flags(parser: argparse.ArgumentParser) -> None:
    """``train``'s flags: ``--recipe``, every recipe's hyper-parameters (from their dataclasses,
    with each recipe's default), then the run's settings (from ``RunConfig``)."""
    from dataclasses import fields

    from . import recipes
    from .engine import RunConfig, kind_of

    parser.add_argument(
        "--recipe",
        choices=recipes.NAMES,
        default="lecture",
        help="lecture: the lesson net as taught; modern: lesson 06's network and recipe; "
        "speedrun: lesson 08's (airbench94's widths on a GPU, half of them on a CPU)",
    )
    for name, owned in _recipe_fields().items():
        field = owned[0][1]
        words = [_default_words(r, f, recipes.get(r).hyper_type) for r, f in owned]
        help_text = field.metadata["help"]
        if len(owned) < len(recipes.NAMES):  # a setting of some recipes only
            help_text = f"{', '.join(r for r, _ in owned)}: {help_text}"
        extra = _argparse_options(field)
        if kind_of(field) == "bool":
            on = field.default is not True
            if not on:
                help_text = help_text.replace(": ", ": switch off ", 1)
            parser.add_argument(
                _flag(field), dest=name, action="store_const", const=on, help=help_text
            )
            continue
        parser.add_argument(
            _flag(field),
            dest=name,
            type={"int": int, "float": float}.get(kind_of(field), str),
            help=f"{help_text}; default: {', '.join(words)}",
            **extra,
        )
    for field in fields(RunConfig):
        extra = _argparse_options(field)
        help_text = field.metadata["help"]
        if kind_of(field) == "bool":
            parser.add_argument(_flag(field), action="store_true", help=help_text)
            continue
        if field.default is not None:
            help_text += " (default: %(default)s)"
        kind = seed if field.name == "seed" else str
        parser.add_argument(
            _flag(field), dest=field.name, type=kind, default=field.default, help=help_text, **extra
        )


def cmd_benchmark(args: argparse.Namespace) -> int:
    from .benchmark import run_benchmark

    run_benchmark(args.device, args.epochs, args.batch_size, args.lr, args.seed)
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    import torch
    from torch.utils.data import DataLoader
    from torchvision import transforms

    from .checkpoints import load_model, trained_in_bf16
    from .data import CLASSES, CourseCIFAR10
    from .device import pick_device
    from .evaluate import per_class_accuracy, predict_all
    from .precision import bf16_refusal

    device = pick_device(args.device)
    model = load_model(args.checkpoint, device, args.trust_pickle, log=say)
    # A run that trained in bf16 tested in bf16: test it the same way, so that the accuracy
    # matches the run's last line, where this device can (the last digits can differ in fp32).
    amp = trained_in_bf16(args.checkpoint) and bf16_refusal(device) is None
    if amp:
        say("testing in bf16 autocast, as the run that saved it tested")
    autocast = torch.autocast(device.type, torch.bfloat16, enabled=amp)
    test_set = CourseCIFAR10(train=False, transform=transforms.ToTensor())
    loader = DataLoader(test_set, batch_size=args.batch_size)
    with autocast:
        _, predicted, targets = predict_all(model, loader, device)
    accuracy = (predicted == targets).float().mean().item()
    print(
        f"test accuracy of {one_line(args.checkpoint)}: {accuracy:.2%} on {len(targets):,} images"
    )
    for name, acc in zip(CLASSES, per_class_accuracy(predicted, targets), strict=True):
        print(f"  {name:<10} {acc:.2%}")
    if args.tta:
        from .data import TensorData
        from .evaluate import evaluate_tta

        with autocast:
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


def build_parser(train_flags: bool = True) -> argparse.ArgumentParser:
    """The argument parser with one sub-command per job. ``train``'s flags come from the
    recipes' dataclasses, which import PyTorch: without ``train_flags`` they are left out, so
    that ``cifar-course --help`` and the other commands start quickly."""
    parser = OneLineParser(
        prog="cifar-course", description="The cifar-course helpers: CIFAR-10 with PyTorch."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("data", help="find CIFAR-10 and check that it is complete and intact")
    p.set_defaults(func=cmd_data)

    p = sub.add_parser(
        "train",
        help="train the lesson net (the lecture's recipe by default)",
        description="Train a network on CIFAR-10 with one of the course's recipes. Under "
        "torchrun (torchrun --nproc-per-node N -m cifar_course train ...) it trains one model "
        "with DistributedDataParallel: N processes, rank 0 printing, logging and saving.",
    )
    if train_flags:
        add_train_flags(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("benchmark", help="time the lecture's loop against the fast loop")
    p.add_argument(
        "--epochs",
        type=epochs,
        default=1,
        help="epochs per loop (%(default)s); 10 compares the recipe's accuracy too",
    )
    p.add_argument("--batch-size", type=batch, help="default: the lecture recipe's batch size")
    p.add_argument("--lr", type=rate, help="default: the lecture recipe's learning rate")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    p.add_argument("--seed", type=seed, default=0, help="default: %(default)s")
    p.set_defaults(func=cmd_benchmark)

    p = sub.add_parser("evaluate", help="test accuracy of a checkpoint, overall and per class")
    p.add_argument("--checkpoint", required=True, metavar="PATH")
    p.add_argument("--batch-size", type=batch, default=256, help="default: %(default)s")
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
    """Entry point: run a sub-command; turn a CourseError or an operating-system error (a full
    disk, a denied permission: ``errors.os_error_message``) into one line on stderr and exit 1."""
    argv = list(sys.argv[1:] if argv is None else argv)
    for stream in (sys.stdout, sys.stderr):  # a file name that is not UTF-8 cannot stop a run
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    try:
        args = build_parser(train_flags=argv[:1] == ["train"]).parse_args(argv)
        return int(args.func(args))
    except CourseError as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # `cifar-course predict ... | head -1`: the reader has had enough
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (Python's own advice for this case)
        return 1
    except OSError as exc:  # the operating system's refusals, for every command: one line
        print(f"error: {one_line(os_error_message(exc))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; the checkpoints already written are intact", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
