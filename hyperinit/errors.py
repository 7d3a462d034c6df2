"""Errors of the hyperinit API, each saying what was wrong and what is accepted."""

from __future__ import annotations


class CheckpointError(ValueError):
    """A generator checkpoint is missing, corrupt, or does not match its config."""


class OutputPathError(ValueError):
    """An output path cannot be written (missing or read-only folder, a file where a folder
    goes or the reverse, a folder holding other files, a write that failed)."""


class DiskFullError(OutputPathError):
    """The output's file system ran out of space (ENOSPC) or quota (EDQUOT) while writing."""


class GeneratorLimitError(ValueError):
    """An architecture is beyond what a generator can make (too large for it)."""


class TaskError(ValueError):
    """A task a generator cannot take: any task for a generator without task conditioning,
    or a descriptor that is not one of the generator's size."""
