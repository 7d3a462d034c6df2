"""Shared fixtures: paths to the real data ($HYPERINIT_DATA or ../shared/data) and small
helper models."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hubserver import hub_server  # noqa: F401  (loopback Hub server fixture)

ROOT = Path(__file__).resolve().parents[1]
# The data folder training.data reads by default: $HYPERINIT_DATA, else the checkout's.
SHARED_DATA = Path(os.environ.get("HYPERINIT_DATA") or ROOT.parent / "shared" / "data")


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


# Two of the smallest sampled CNNs (42k and 27k parameters), 2 runs each, 4 steps on 256
# images of the real CIFAR-10, saved at steps 2 and 4: seconds to build.
TINY_ZOO = {"archs": ("convnext-0", "vgg-2"), "models_per_arch": 2, "steps": 4,
            "save_at": (2, 4), "lrs": (0.02, 0.05), "weight_decays": (5e-4, 5e-3),
            "batch_sizes": (32,), "train_samples": 256, "test_samples": 128, "device": "cpu"}


# The tiny zoo over three-way tasks: a VGG and a BatchNorm ResNet (26k and 24k parameters
# with three-way heads), 2 runs each, each run on its own training task.
TINY_TASK_ZOO = {**TINY_ZOO, "archs": ("vgg-2", "bnresnet-1"), "tasks": 3}


def tiny_zoo_config(shared_data: Path, out: Path, **options):
    from training.zoo import ZooConfig

    return ZooConfig(**{**TINY_ZOO, "data": str(shared_data / "cifar10-jpg.zip"),
                        "out": str(out), **options})


@pytest.fixture(scope="session")
def tiny_zoo(tmp_path_factory, shared_data):
    """``(config, checkpoints written)`` of a tiny zoo built once; never modify it (copy)."""
    from training.zoo import build_zoo

    cfg = tiny_zoo_config(shared_data, tmp_path_factory.mktemp("zoo") / "zoo")
    return cfg, build_zoo(cfg)


@pytest.fixture(scope="session")
def tiny_task_zoo(tmp_path_factory, shared_data):
    """``(config, checkpoints written)`` of :data:`TINY_TASK_ZOO` built once; never modify it
    (copy)."""
    from training.zoo import build_zoo

    cfg = tiny_zoo_config(shared_data, tmp_path_factory.mktemp("task-zoo") / "zoo",
                          **TINY_TASK_ZOO)
    return cfg, build_zoo(cfg)
