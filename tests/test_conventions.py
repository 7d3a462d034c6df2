"""Conventions of the ecosystem a user tries first (issue 17): ``python -m hyperinit``,
timm models at their own input size, transformers encoder-decoders and mixtures of experts
passed as modules, and failed traces that print one error instead of torch's logs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_module(*argv: str) -> subprocess.CompletedProcess[str]:
    """``python -m hyperinit ARGV...`` in a fresh interpreter, as a user runs it."""
    return subprocess.run([sys.executable, "-m", "hyperinit", *argv], capture_output=True,
                          text=True, cwd=ROOT, timeout=300)


def test_python_m_hyperinit_shows_help():
    proc = run_module("--help")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: hyperinit")
    for command in ("graph", "predict", "train", "serve"):
        assert command in proc.stdout


def test_python_m_hyperinit_runs_a_command():
    proc = run_module("graph", "torchvision:resnet18", "--num-classes", "10")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("torchvision:resnet18: ")
    assert "nodes by type: conv 20" in proc.stdout
