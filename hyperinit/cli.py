"""The ``hyperinit`` command. Each subcommand lives in ``hyperinit/commands/<name>.py``."""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings

from graphs import PartialGraphWarning

OWN_WARNINGS = (PartialGraphWarning,)

# Subcommand modules, in the order `hyperinit --help` lists them. Each defines
# `register(subparsers)`, which adds its parser and sets `func(args) -> int`.
COMMANDS = ("graph", "predict", "train", "eval", "serve", "push", "pull", "zoo")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hyperinit",
        description="Predict and generate initial parameters for neural networks.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"hyperinit.commands.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with warnings.catch_warnings():  # restores showwarning on exit
        show = warnings.showwarning

        def show_own(message, category, filename, lineno, file=None, line=None) -> None:
            """Our warnings are messages to the user: one line, no source location."""
            if issubclass(category, OWN_WARNINGS):
                print(f"hyperinit {args.command}: warning: {message}", file=sys.stderr)
            else:
                show(message, category, filename, lineno, file, line)

        warnings.showwarning = show_own
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, PermissionError) as err:
        print(f"hyperinit {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
