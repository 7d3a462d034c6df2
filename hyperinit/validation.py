"""The rules for the options of an init, shared by the Python API, the CLI and the service.

Each check fails with one line that names the bad value and what is accepted. The API
functions apply them before any work, the CLI passes its arguments to those functions, and
the service's request schema (``serve/schemas.py``) uses the same bounds. Architecture
options (``num_classes``, finite config numbers) are checked by ``graphs.resolve``.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import OutputPathError

SEED_MAX = 2**53 - 1  # the largest integer every JSON client holds exactly


def check_seed(seed: object) -> int:
    """``seed`` if it is an integer from 0 to :data:`SEED_MAX` (not a bool)."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= SEED_MAX:
        raise ValueError(f"seed must be an integer from 0 to {SEED_MAX:,}, got {seed!r}")
    return seed


def check_noise(noise: object) -> float:
    """``noise`` as a float if it is a number from 0 to 1 (not a bool or NaN)."""
    if isinstance(noise, bool) or not isinstance(noise, int | float) or not 0 <= noise <= 1:
        raise ValueError(f"noise must be between 0 and 1 (the fraction of each weight's "
                         f"variance drawn at random), got {noise!r}")
    return float(noise)


def check_max_shard_size(size: object) -> int:
    """``size`` if it is a positive number of bytes (an integer, not a bool)."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"max_shard_size must be a positive number of bytes (e.g. "
                         f"5000000000), got {size!r}")
    return size


def check_output_path(path: str | os.PathLike) -> Path:
    """``path`` as a Path if it names something (``""`` would silently mean the working
    directory)."""
    if not os.fspath(path).strip():
        raise OutputPathError(f"the output path is empty ({os.fspath(path)!r}): give a file "
                              "ending in .safetensors or a folder")
    return Path(path)
