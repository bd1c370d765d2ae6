"""Command line: ``lwta train | models | evaluate | leaderboard | verify | plots | cards | ship``.

Each command lives in its own module, which exposes ``add_parser(subparsers) -> argparse.ArgumentParser``; the
parser's ``func`` runs the command on the parsed arguments and returns the exit code. :data:`COMMANDS` lists them
in the order of ``lwta --help``.
"""
from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

from . import cards, leaderboard, plots, ship, train, verify
from .evaluation import cli as evaluation_cli
from .evaluation.errors import EvaluationError
from .io import LockHeldError
from .models import list_models
from .zoo import DATASETS, available_models


def _models(args: argparse.Namespace) -> int:
    shipped: dict[str, list[str]] = {}
    for dataset in DATASETS:
        for entry in available_models(dataset):
            shipped.setdefault(entry["name"], []).append(dataset)
    names = [n for n in list_models() if n in shipped or not args.shipped]
    width = max((len(n) for n in names), default=0)
    for name in names:
        print(f"{name:<{width}}  weights: {', '.join(shipped[name])}" if name in shipped else name)
    return 0


def add_models_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """``lwta models``: the registered architectures, one per line; those with shipped weights say for which data
    sets."""
    p = subparsers.add_parser("models", help="list registered architectures (and which have shipped weights)",
                              description="List the registered architectures, one per line; a model with shipped "
                                          "(pretrained) weights is followed by the data sets they are for.")
    p.add_argument("--shipped", action="store_true", help="only the models with shipped weights")
    p.set_defaults(func=_models)
    return p


COMMANDS: tuple[Callable[[argparse._SubParsersAction], argparse.ArgumentParser], ...] = (
    train.add_parser, add_models_parser, evaluation_cli.add_parser, leaderboard.add_parser, verify.add_parser,
    plots.add_parser, cards.add_parser, ship.add_parser)

# Exceptions whose message is the whole story: printed without a traceback, exit code 2.
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError, EvaluationError, LockHeldError)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lwta", description="Train, evaluate, render and ship lwta-plugin models "
                                "(`lwta COMMAND --help` for a command's options).")
    sub = p.add_subparsers(dest="command", required=True)
    for add_parser in COMMANDS:
        add_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = None if argv is None else argv[1:]  # the command's own arguments (`lwta train` records them)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        if args.command != "evaluate":
            raise
        print("lwta: interrupted; finished batches are kept: rerun the same command to resume", file=sys.stderr)
        return 130
    except USER_ERRORS as e:
        print(f"lwta: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `lwta models | head`: the reader left; nothing is wrong
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes
        return 0
    except OSError as e:  # a full disk, a read-only or missing directory: the path and the reason, no traceback
        print(f"lwta: error: {describe_os_error(e)}", file=sys.stderr)
        return 2


def describe_os_error(e: OSError) -> str:
    """One line naming the file and the reason (``str(e)`` of an OSError without a file name has neither)."""
    reason = e.strerror or str(e) or type(e).__name__
    if e.filename is None:
        return reason
    where = str(e.filename) + (f" -> {e.filename2}" if e.filename2 is not None else "")
    return reason if where in reason else f"{where}: {reason}"


if __name__ == "__main__":
    sys.exit(main())
