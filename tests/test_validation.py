"""One set of rules for an init's options: the Python API and the CLI refuse what the service
refuses (its side is in tests/test_serve.py's BAD_REQUESTS), each with one line that names the
bad value and what is accepted, before any work and without leaving a file."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import cli_error

import graphs
import hyperinit

RESNET = ["predict", "torchvision:resnet18", "--num-classes", "10", "--generator", "untrained"]
# name: (arguments after RESNET, then --out, and what the one-line error says)
BAD_ARGUMENTS = {
    "no classes": (["--num-classes", "0"], "num_classes must be an integer from 1 to "
                                           "2,147,483,647, got 0"),
    "negative shard size": (["--max-shard-size", "-5"], "max_shard_size must be a positive "
                                                        "number of bytes"),
    "zero shard size": (["--max-shard-size", "0"], "got 0"),
    "negative seed": (["--seed", "-1"], "seed must be an integer from 0 to "
                                        "9,007,199,254,740,991, got -1"),
    "NaN noise": (["--noise", "nan"], "noise must be between 0 and 1"),
    "infinite config number": (["--config", '{"zero_init_residual": true, "width": Infinity}'],
                               "config.width is inf: options take finite numbers only"),
}


@pytest.mark.parametrize("name", BAD_ARGUMENTS)
def test_cli_refuses_what_the_service_refuses(name: str, tmp_path: Path, capsys):
    extra, message = BAD_ARGUMENTS[name]
    out = tmp_path / "out"
    assert message in cli_error(capsys, [*RESNET, *extra, "--out", str(out)])
    assert list(tmp_path.iterdir()) == []


def test_cli_empty_output_path_is_refused(tmp_path: Path, capsys, monkeypatch):
    """``--out ""`` would otherwise mean the working directory."""
    monkeypatch.chdir(tmp_path)
    assert "the output path is empty ('')" in cli_error(capsys, [*RESNET, "--out", ""])
    assert list(tmp_path.iterdir()) == []


def test_cli_output_path_of_the_wrong_kind(tmp_path: Path, capsys):
    (tmp_path / "x.safetensors").mkdir()
    (tmp_path / "plain").write_text("not a folder")
    error = cli_error(capsys, [*RESNET, "--out", str(tmp_path / "x.safetensors")])
    assert "x.safetensors is a folder, and a path ending in .safetensors is written as one" in error
    error = cli_error(capsys, [*RESNET, "--out", str(tmp_path / "plain")])
    assert "plain is a file, and a path not ending in .safetensors is a folder" in error
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain", "x.safetensors"]
    assert list((tmp_path / "x.safetensors").iterdir()) == []


@pytest.mark.parametrize("options, error", [
    ({"seed": True}, "seed must be an integer"),
    ({"seed": 2**53}, "seed must be an integer"),
    ({"seed": 1.0}, "seed must be an integer"),
    ({"noise": True}, "noise must be between 0 and 1"),
    ({"num_classes": True}, "num_classes must be an integer"),
    ({"num_classes": 2**31}, "num_classes must be an integer"),
    ({"max_shard_size": 0}, "max_shard_size must be a positive"),
    ({"max_shard_size": 1.5}, "max_shard_size must be a positive"),
])
def test_python_api_refuses_the_same_values(options: dict, error: str, tmp_path: Path):
    with pytest.raises(ValueError, match=error):
        hyperinit.save_init("torchvision:resnet18", tmp_path / "out", "untrained", **options)
    assert list(tmp_path.iterdir()) == []


def test_non_finite_numbers_are_refused_anywhere_in_the_options():
    with pytest.raises(graphs.GraphBuildError, match=r"config\.rope_scaling\.factor is nan"):
        graphs.resolve("hf:llama", rope_scaling={"rope_type": "linear", "factor": float("nan")})
    with pytest.raises(graphs.GraphBuildError, match=r"config\.depths\[1\] is -inf"):
        graphs.resolve("timm:swin_tiny_patch4_window7_224", depths=[2, float("-inf")])
