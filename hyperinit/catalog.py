"""Generators by name: the shipped ones, ``untrained``, folders and Hub references.

:func:`load_generator` is the one way every caller (prediction, the service, training,
the Hub commands) turns what a user wrote into a loaded :class:`~hyperinit.generator.
Generator`; the checkpoint's ``kind`` picks the class (:data:`hyperinit.generator.KINDS`).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from .checkpoint import CONFIG_FILE, WEIGHTS_FILE
from .errors import CheckpointError
from .generator import Generator
from .ghn import GraphHyperNetwork
from .hub import HUB_PREFIX, parse_ref

# The shipped generators: package data in a wheel, the checkout's checkpoints/ otherwise.
_PACKAGED = Path(__file__).resolve().parent / "checkpoints"
SHIPPED = _PACKAGED if _PACKAGED.is_dir() else Path(__file__).resolve().parents[1] / "checkpoints"
UNTRAINED = "untrained"

GeneratorRef = str | os.PathLike | Generator | None  # what load_generator accepts


def shipped_generators() -> list[str]:
    """Names of the generators that ship with hyperinit (folders of :data:`SHIPPED`)."""
    return sorted(p.name for p in SHIPPED.glob("*") if (p / WEIGHTS_FILE).is_file())


def default_generator() -> str:
    """The generator used when none is named: the first shipped ``ghn-*`` if present."""
    shipped = shipped_generators()
    preferred = [n for n in shipped if n.startswith("ghn")]
    return (preferred or shipped or [UNTRAINED])[0]


def list_generators() -> list[str]:
    """Names of the shipped generators, plus ``untrained``."""
    return [*shipped_generators(), UNTRAINED]


def load_generator(generator: GeneratorRef = None) -> Generator:
    """A generator by shipped name, local folder, ``hub:OWNER/NAME[@REVISION]``, or
    instance (returned as is); None is :func:`default_generator`.

    ``"untrained"`` is a randomly initialized graph hypernetwork with a fixed seed: its
    predictions already have the right statistics per layer, but no learned structure.
    """
    if isinstance(generator, Generator):
        return generator
    name = str(generator) if generator is not None else default_generator()
    if name.startswith(HUB_PREFIX):  # hub:OWNER/NAME[@REVISION]
        repo_id, revision = parse_ref(name)
        return Generator.from_hub(repo_id, revision=revision)
    if name == UNTRAINED:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = GraphHyperNetwork()
        model.name_or_path = f"{UNTRAINED}@seed0"
        return model.eval()
    path = Path(name) if Path(name).exists() else SHIPPED / name
    if not path.is_dir():
        raise CheckpointError(
            f"unknown generator {name!r}: give a directory with {CONFIG_FILE} and "
            f"{WEIGHTS_FILE}, {HUB_PREFIX}OWNER/NAME[@REVISION], or one of "
            f"{', '.join(list_generators())}")
    return Generator.from_pretrained(path)
