"""Errors of the hyperinit API, each saying what was wrong and what is accepted."""

from __future__ import annotations


class CheckpointError(ValueError):
    """A generator checkpoint is missing, corrupt, or does not match its config."""


class OutputPathError(ValueError):
    """An output path cannot be written (missing or read-only folder)."""


class GeneratorLimitError(ValueError):
    """An architecture is beyond what a generator can make (too large for it)."""
