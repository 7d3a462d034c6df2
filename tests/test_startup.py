"""What the ``hyperinit`` command imports before it does any work.

Heavy libraries (torch, transformers, torch_geometric, diffusers, fastapi) take seconds to
import on a small machine; a command must import only what it uses. Each check runs the
command in a fresh interpreter and reads ``sys.modules`` afterwards (no timing).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from hyperinit.cli import COMMANDS

HEAVY = ("torch", "torchvision", "transformers", "torch_geometric", "diffusers", "fastapi",
         "uvicorn", "starlette", "pydantic", "huggingface_hub", "safetensors", "scipy",
         "numpy", "matplotlib", "timm")
RUN = f"""
import json, sys
from hyperinit.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
top = {{name.partition(".")[0] for name in sys.modules}}
print(json.dumps(sorted(top & set({list(HEAVY)!r}))))
"""


def heavy_imports(*argv: str) -> set[str]:
    """The HEAVY top-level packages loaded once ``hyperinit ARGV`` has run."""
    out = subprocess.run([sys.executable, "-c", RUN, *argv], capture_output=True, text=True,
                         check=True)
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize("argv", [("--help",), *((name, "--help") for name in COMMANDS)])
def test_help_imports_no_heavy_library(argv):
    assert heavy_imports(*argv) == set()


def test_predicting_a_torchvision_model_imports_only_what_it_needs(tmp_path):
    """torch and torchvision build the model, numpy and scipy find graph distances,
    safetensors and huggingface_hub load the generator; nothing else."""
    loaded = heavy_imports("predict", "torchvision:resnet18", "--num-classes", "10",
                           "--out", str(tmp_path / "init.safetensors"))
    assert loaded == {"torch", "torchvision", "numpy", "scipy", "safetensors",
                      "huggingface_hub"}
    assert (tmp_path / "init.safetensors").is_file()
