"""Conventions of the ecosystem a user tries first (issue 17): ``python -m hyperinit``,
timm models at their own input size, transformers encoder-decoders and mixtures of experts
passed as modules, and failed traces that print one error instead of torch's logs."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import timm
import torch
import transformers
from torch import nn

import graphs

ROOT = Path(__file__).resolve().parents[1]


def run_module(*argv: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``python -m hyperinit ARGV...`` in a fresh interpreter, as a user runs it (with
    ``env`` added to the environment)."""
    return subprocess.run([sys.executable, "-m", "hyperinit", *argv], capture_output=True,
                          text=True, cwd=ROOT, timeout=300, env={**os.environ, **env})


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


def timm_module(name: str, **options: Any) -> nn.Module:
    """A timm model built as a user builds it (never pretrained), on the meta device."""
    with graphs.meta_init():
        return timm.create_model(name, pretrained=False, **options)


@pytest.mark.parametrize("name", ["vit_tiny_patch16_384", "maxvit_nano_rw_256",
                                  "bat_resnext26ts"])
def test_timm_module_is_traced_at_its_declared_input_size(name):
    model = timm_module(name)
    graph = graphs.build(model)
    assert graph.unused == [] and graph.num_params == sum(p.numel() for p in model.parameters())


def test_timm_spec_keeps_the_image_size_it_is_given():
    # timm leaves pretrained_cfg at 224 when img_size is given; the ViT takes 96 only.
    graph = graphs.build(graphs.resolve("timm:vit_tiny_patch16_224", img_size=96))
    pos_embed = next(p for p in graph.params if p.name == "pos_embed")
    assert pos_embed.shape == (1, 1 + (96 // 16) ** 2, 192)


def test_timm_module_keeps_the_example_inputs_it_is_given():
    model = timm_module("vit_tiny_patch16_224", img_size=96)
    with pytest.raises(graphs.GraphBuildError, match=r"\(2, 3, 224, 224\)"):
        graphs.build(model)  # its cfg's size, which this ViT refuses
    graph = graphs.build(model, torch.zeros(2, 3, 96, 96))
    assert graph.unused == []


TINY_T5 = {"d_model": 32, "d_kv": 16, "d_ff": 64, "num_layers": 2, "num_heads": 2,
           "vocab_size": 100}


@pytest.mark.parametrize("model_class", ["T5Model", "T5ForConditionalGeneration"])
def test_encoder_decoder_module_traces_with_decoder_inputs(model_class):
    # Without the cache, as hf: specs trace (a returned cache changes the forward's graph).
    config = transformers.T5Config(**TINY_T5, use_cache=False)
    with graphs.meta_init():
        model = getattr(transformers, model_class)(config)
    graph = graphs.build(model)
    assert graph.unused == []
    assert any(p.name.startswith("decoder.block.1.") for p in graph.params)
    if model_class == "T5ForConditionalGeneration":  # what hf:t5 builds: the same graph
        assert graph.arch_hash == graphs.build(graphs.resolve("hf:t5", **TINY_T5)).arch_hash


def test_encoder_only_module_of_an_encoder_decoder_config_gets_no_decoder_inputs():
    with graphs.meta_init():
        model = transformers.T5EncoderModel(transformers.T5Config(**TINY_T5))
    assert graphs.build(model).unused == []


TINY_MIXTRAL = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                "num_attention_heads": 2, "num_key_value_heads": 1, "num_local_experts": 4,
                "num_experts_per_tok": 2, "vocab_size": 100}


def test_mixture_of_experts_spec_traces_every_expert():
    graph = graphs.build(graphs.resolve("hf:mixtral", **TINY_MIXTRAL))
    assert graph.unused == []
    shapes = {p.name: p.shape for p in graph.params}
    assert shapes["model.layers.1.mlp.experts.gate_up_proj"] == (4, 2 * 64, 32)
    assert shapes["model.layers.1.mlp.experts.down_proj"] == (4, 32, 64)


def test_mixture_of_experts_module_traces_and_keeps_its_experts_implementation():
    config = transformers.MixtralConfig(**TINY_MIXTRAL, use_cache=False)
    with graphs.meta_init():
        model = transformers.MixtralForCausalLM(config)
    before = model.get_experts_implementation()
    graph = graphs.build(model)
    assert graph.unused == []
    assert graph.arch_hash == graphs.build(graphs.resolve("hf:mixtral", **TINY_MIXTRAL)).arch_hash
    assert model.get_experts_implementation() == before


UNTRACEABLE = '''
import torch
from torch import nn


class Untraceable(nn.Module):
    """Its forward multiplies by a matrix of the wrong size: no input makes it run."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        return self.fc(x) @ torch.ones(3, 3)
'''


def untraceable(tmp_path: Path) -> nn.Module:
    (tmp_path / "untraceable.py").write_text(UNTRACEABLE)
    namespace: dict[str, Any] = {}
    exec(UNTRACEABLE, namespace)
    return namespace["Untraceable"]()


def test_failed_trace_logs_nothing_and_raises_one_clear_error(tmp_path, capfd):
    logger = logging.getLogger("torch._subclasses.fake_tensor")
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    logger.addHandler(handler)
    try:
        with pytest.raises(graphs.GraphBuildError, match=r"forward of Untraceable failed with "
                           r"input torch.float32 \(2, 4\): a and b must have same reduction"):
            graphs.build(untraceable(tmp_path))
        assert records == []
        logger.error("after the trace")  # the logger works again
        assert [r.getMessage() for r in records] == ["after the trace"]
    finally:
        logger.removeHandler(handler)
    assert "Traceback" not in capfd.readouterr().err


def test_failed_trace_prints_only_our_error_on_the_command_line(tmp_path):
    untraceable(tmp_path)
    proc = run_module("graph", "python:untraceable:Untraceable", PYTHONPATH=str(tmp_path))
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [proc.stderr.strip()], proc.stderr  # one line
    assert proc.stderr.startswith(
        "hyperinit graph: error: forward of python:untraceable:Untraceable failed with input")


def test_torch_logs_are_quiet_in_the_tracing_thread_only():
    from graphs.tracing import TORCH_LOGGERS, quiet_torch_logs

    logger = logging.getLogger(TORCH_LOGGERS[0])
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    logger.addHandler(handler)
    try:
        with quiet_torch_logs():
            logger.error("from the tracing thread")
            other = threading.Thread(target=logger.error, args=("from another thread",))
            other.start()
            other.join()
    finally:
        logger.removeHandler(handler)
    assert [r.getMessage() for r in records] == ["from another thread"]
