"""The `hyperinit graph` command: summary, JSON dump, drawing, and its error messages.

Most tests call :func:`hyperinit.cli.main` in-process (fast); one runs the installed
``hyperinit`` script to check the real exit code and stderr of a failing command.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import pytest

import graphs
from hyperinit.cli import main

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SMALL_GPT2 = ["hf:gpt2", "--config", '{"n_layer": 1, "n_embd": 64, "n_head": 2}']


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run `hyperinit ARGV...` in-process; return (exit code, stdout, stderr)."""
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_summary_lists_node_types_and_arch_hash(capsys):
    code, out, err = run_cli(capsys, "graph", "torchvision:resnet18", "--num-classes", "10")
    assert code == 0, err
    expected = graphs.build(graphs.resolve("torchvision:resnet18", num_classes=10))
    assert f"arch_hash {expected.arch_hash}" in out
    types_line = next(line for line in out.splitlines() if line.startswith("nodes by type:"))
    for op in ("conv", "batch_norm", "relu", "add", "linear"):
        assert f"{op} " in types_line, op
    assert "unrecognized ops: none" in out


def test_partial_trace_is_a_one_line_warning(capsys):
    code, out, err = run_cli(capsys, "graph", "hf:t5", "--num-classes", "3", "--config",
                             '{"num_layers": 1, "d_model": 32, "d_ff": 64, "num_heads": 2}')
    assert code == 0, err
    warning = [line for line in err.splitlines() if "PartialGraph" in line or "stopped" in line]
    assert len(warning) == 1 and warning[0].startswith(
        "hyperinit graph: warning: the forward of hf:t5 stopped at aten.unique_consecutive")
    assert "arch_hash" in out


def test_json_output_covers_every_parameter(capsys):
    code, out, err = run_cli(capsys, "graph", *SMALL_GPT2, "--format", "json")
    assert code == 0, err
    dumped = json.loads(out)
    assert {"nodes", "edges", "params", "arch_hash"} <= set(dumped)
    spec = graphs.resolve("hf:gpt2", n_layer=1, n_embd=64, n_head=2)
    model_names = {n for n, _ in spec.build().named_parameters(remove_duplicate=False)}
    dumped_names = [n for p in dumped["params"] for n in (p["name"], *p["tied"])]
    assert sorted(dumped_names) == sorted(model_names)  # each name exactly once
    assert "lm_head.weight" in model_names  # the tied alias is among them
    num_nodes = len(dumped["nodes"])
    assert all(0 <= s < d < num_nodes for s, d in dumped["edges"])
    assert all(0 < p["node"] < num_nodes for p in dumped["params"])
    assert dumped["arch_hash"] == graphs.build(spec).arch_hash


def test_out_writes_a_png_and_no_temp_file(capsys, tmp_path):
    target = tmp_path / "x.png"
    code, out, err = run_cli(capsys, "graph", *SMALL_GPT2, "--out", str(target))
    assert code == 0, err
    assert "nodes by type:" in out  # the summary is still printed
    assert "drew" in err and str(target) in err
    assert target.read_bytes()[:8] == PNG_MAGIC
    height, width, *_ = matplotlib.image.imread(target).shape
    assert height > 0 and width > 0
    assert [p.name for p in tmp_path.iterdir()] == ["x.png"]


def test_unknown_spec_exits_2_with_close_matches(capsys):
    code, out, err = run_cli(capsys, "graph", "torchvision:resnet5O")
    assert code == 2
    assert out == ""
    assert "did you mean" in err and "resnet50" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("config", ["[1, 2]", '"resnet"', "3"])
def test_config_must_be_a_json_object(capsys, config):
    with pytest.raises(SystemExit) as exc:
        main(["graph", "torchvision:resnet18", "--config", config])
    assert exc.value.code == 2
    captured = capsys.readouterr()
    assert "--config: must be a JSON object" in captured.err
    assert captured.out == ""


def test_config_that_is_not_json_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["graph", "torchvision:resnet18", "--config", "{n_layer: 2}"])
    assert exc.value.code == 2
    assert "--config: not valid JSON" in capsys.readouterr().err


def test_option_the_constructor_rejects_is_reported_cleanly(capsys):
    code, _, err = run_cli(capsys, "graph", "torchvision:resnet18", "--config", '{"bogus": 1}')
    assert code == 2
    assert "torchvision:resnet18" in err and "bogus" in err
    assert "Traceback" not in err


def test_installed_command_reports_bad_spec_on_stderr():
    script = Path(sys.executable).with_name("hyperinit")
    assert script.exists(), f"the hyperinit command is not installed next to {sys.executable}"
    proc = subprocess.run([str(script), "graph", "hf:gtp2"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert "hyperinit graph: error:" in proc.stderr and "gpt2" in proc.stderr
    assert "Traceback" not in proc.stderr
