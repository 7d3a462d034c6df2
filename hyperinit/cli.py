"""The ``hyperinit`` command. Each subcommand lives in ``hyperinit/commands/<name>.py``."""

from __future__ import annotations

import argparse
import importlib
import sys

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
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, PermissionError) as err:
        print(f"hyperinit {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
