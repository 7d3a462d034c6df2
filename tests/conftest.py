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


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module of many small ops: with other processes on the two
    cores, OpenMP spinning on both slows everything down."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
