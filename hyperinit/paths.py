"""Where hyperinit keeps files it can rebuild: one cache folder per user, outside the code.

``$HYPERINIT_CACHE``, else ``$XDG_CACHE_HOME/hyperinit``, else ``~/.cache/hyperinit``: an
installed package never writes beside its own modules.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_home() -> Path:
    """The user's hyperinit cache folder (not created here)."""
    if os.environ.get("HYPERINIT_CACHE"):
        return Path(os.environ["HYPERINIT_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "hyperinit"
