"""Shared fixtures: paths to the real data in ../shared/data and small helper models."""

from __future__ import annotations

from pathlib import Path

import pytest
from hubserver import hub_server  # noqa: F401  (loopback Hub server fixture)

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    assert SHARED_DATA.is_dir(), f"the shared data folder is missing: {SHARED_DATA}"
    return SHARED_DATA
