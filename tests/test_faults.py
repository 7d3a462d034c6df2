"""Fault injection: reused output folders and a full disk for the CLI and Python API.

Each test asserts correct bytes or the documented one-line error, and that nothing partial
or stale is left. A full disk is a small tmpfs where one can be mounted (``unshare -rm``;
those tests start processes and are marked slow), and otherwise an ENOSPC raised at the
write call (:class:`helpers.FullDisk`).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import cli_error, full_disk_open, in_tmpfs, needs_mount
from safetensors.torch import load_file

import graphs
import hyperinit
from hyperinit import safetensors_io
from hyperinit.cli import main
from hyperinit.safetensors_io import INDEX_FILE, SINGLE_FILE

ROOT = Path(__file__).resolve().parents[1]
RESNET = ["torchvision:resnet18", "--num-classes", "10"]
# With noise, each seed is its own init (a GHN's prediction itself is deterministic).
PREDICT = ["predict", *RESNET, "--generator", "untrained", "--noise", "0.5"]


def predicted(seed: int, tmp_path: Path) -> dict[str, torch.Tensor]:
    path = tmp_path / f"reference-{seed}.safetensors"
    hyperinit.save_init("torchvision:resnet18", path, "untrained", seed=seed, noise=0.5,
                        num_classes=10)
    return load_file(path)


def loaded(folder: Path) -> dict[str, torch.Tensor]:
    """What ``from_hub`` loads from an init folder into a ResNet-18."""
    model = graphs.resolve("torchvision:resnet18", num_classes=10).build()
    return hyperinit.from_hub(str(folder), model=model).state_dict()


def equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ----- reused output folders ---------------------------------------------------------------
def test_a_folder_init_replaces_an_earlier_one_whole(tmp_path: Path, capsys):
    """Sharded, then one file, then sharded again into the same folder: only the latest
    init's files are there each time, and ``from_hub`` loads the latest."""
    out = tmp_path / "stale"
    assert main([*PREDICT, "--seed", "1", "--max-shard-size", "20000000", "--out", str(out)]) == 0
    shards = sorted(p.name for p in out.iterdir())
    assert INDEX_FILE in shards and len(shards) == 4
    assert main([*PREDICT, "--seed", "2", "--out", str(out)]) == 0
    assert sorted(os.listdir(out)) == [SINGLE_FILE]
    seed2 = predicted(2, tmp_path)
    assert equal(loaded(out), seed2) and not equal(seed2, predicted(1, tmp_path))
    assert main([*PREDICT, "--seed", "3", "--max-shard-size", "20000000", "--out", str(out)]) == 0
    assert SINGLE_FILE not in os.listdir(out) and equal(loaded(out), predicted(3, tmp_path))
    capsys.readouterr()
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("reference")) == [
        "stale"]  # no staging or old folder left beside it


def test_a_folder_holding_other_files_is_refused_untouched(tmp_path: Path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    (out / SINGLE_FILE).write_bytes(b"someone else's")
    error = cli_error(capsys, [*PREDICT, "--out", str(out)])
    assert "holds files that are not an init's (notes.txt)" in error
    assert sorted(os.listdir(out)) == [SINGLE_FILE, "notes.txt"]
    assert (out / SINGLE_FILE).read_bytes() == b"someone else's"
    assert os.listdir(tmp_path) == ["mine"]


# ----- full disk -----------------------------------------------------------------------------
@pytest.mark.parametrize("out", ["r.safetensors", "folder"])
def test_full_disk_is_one_line_and_leaves_nothing(out: str, tmp_path: Path, capsys,
                                                  monkeypatch: pytest.MonkeyPatch):
    """ENOSPC at the write call, after 1 MB of a 45 MB init: one file or a folder."""
    monkeypatch.setattr(safetensors_io, "open", full_disk_open(1 << 20), raising=False)
    error = cli_error(capsys, [*PREDICT, "--out", str(tmp_path / out)])
    assert "its file system is full (No space left on device; the init needs 44,765,128 " in error
    assert "free some space or choose another output path" in error
    assert os.listdir(tmp_path) == []
    with pytest.raises(hyperinit.DiskFullError):
        hyperinit.save_init("torchvision:resnet18", tmp_path / out, "untrained")


@needs_mount
@pytest.mark.slow
def test_full_disk_on_a_small_tmpfs_cli(tmp_path: Path):
    """The CLI on a real 4 MB file system, for one file and for a folder."""
    small = tmp_path / "small"
    small.mkdir()
    script = ('"$@" --out "$0/r.safetensors"; one=$?; "$@" --out "$0/folder"; two=$?; '
              'echo "$one $two"; ls -A "$0"')
    command = [*in_tmpfs("size=4m", script), str(small), sys.executable, "-m", "hyperinit.cli",
               *PREDICT]
    run = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert run.stdout.split() == ["2", "2"], run.stdout + run.stderr  # and `ls` found nothing
    errors = [line for line in run.stderr.splitlines() if line.startswith("hyperinit")]
    assert len(errors) == 2 and all("its file system is full" in e for e in errors), run.stderr
