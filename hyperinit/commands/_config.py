"""The ``--config FILE`` and ``KEY=VALUE`` arguments of commands driven by a config dataclass."""

from __future__ import annotations

import argparse


def add_config_arguments(parser: argparse.ArgumentParser, config_name: str,
                         example: str) -> None:
    """Options of ``config_name`` (a dataclass of ``training``) from a file and overrides;
    ``training.config.load_config`` reads them (overrides win)."""
    parser.add_argument("--config", help=f"a .toml or .yaml file of {config_name} options")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help=f"option overrides, e.g. {example}")
