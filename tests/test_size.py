"""`graphs.check_size`: parameter counts before building, exact against real models, fast for
any declared size, tied parameters once; and ``from_hub``, which checks the same way."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch

import graphs
import hyperinit
from graphs.size import EXACT_MODULES, MAX_MODULES, OverBudget, construction_budget, measure

# Small members of each family with more than 3 layers, so the count is extrapolated; T5 and
# BART have separate encoder and decoder counts.
FAMILIES = {
    "gpt2": {"n_layer": 6, "n_embd": 64, "n_head": 4},
    "llama": {"num_hidden_layers": 5, "hidden_size": 64, "intermediate_size": 128,
              "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 1000},
    "bert": {"num_hidden_layers": 7, "hidden_size": 64, "num_attention_heads": 4,
             "intermediate_size": 128},
    "vit": {"num_hidden_layers": 5, "hidden_size": 64, "num_attention_heads": 4,
            "intermediate_size": 128, "image_size": 32, "patch_size": 4},
    "t5": {"num_layers": 5, "num_decoder_layers": 4, "d_model": 64, "d_ff": 128,
           "num_heads": 4, "d_kv": 16},
    "bart": {"encoder_layers": 5, "decoder_layers": 4, "d_model": 64, "vocab_size": 1000,
             "encoder_ffn_dim": 128, "decoder_ffn_dim": 128, "encoder_attention_heads": 4,
             "decoder_attention_heads": 4},
}
MOE = {"num_hidden_layers": 6, "hidden_size": 32, "intermediate_size": 64, "num_experts": 4,
       "moe_intermediate_size": 16, "shared_expert_intermediate_size": 16,
       "num_experts_per_tok": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
       "vocab_size": 100}


def real_size(spec: graphs.ArchSpec) -> tuple[int, int]:
    model = spec.build()
    return sum(p.numel() for p in model.parameters()), sum(1 for _ in model.modules())


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("num_classes", [None, 3])
def test_extrapolated_counts_equal_the_real_model(family: str, num_classes: int | None):
    from graphs.size import _extrapolated

    spec = graphs.resolve(f"hf:{family}", num_classes=num_classes, **FAMILIES[family])
    estimate = _extrapolated(spec, 10**9)
    assert estimate is not None and estimate.extrapolated
    assert (estimate.params, estimate.modules) == real_size(spec)
    assert graphs.check_size(spec, estimate.params) == estimate.params  # at the limit: fine


@pytest.mark.parametrize("layers", [{"decoder_sparse_step": 2}, {"mlp_only_layers": [0, 1, 2]}])
def test_stacks_that_are_not_uniform_are_counted_exactly(layers: dict):
    """Every other layer a mixture of experts (not uniform: built in full), and the first three
    dense (uniform over 1 to 3 layers, wrong when extrapolated; small, so built in full)."""
    spec = graphs.resolve("hf:qwen2_moe", **MOE, **layers)
    size = measure(spec, 10**9)
    assert (size.params, size.modules) == real_size(spec) and not size.extrapolated


def test_tied_parameters_count_once_against_the_limit():
    """A one-layer GPT-2 has 46.5M parameters, its 38.6M embedding shared with the output."""
    spec = graphs.resolve("hf:gpt2", n_layer=1)
    assert graphs.check_size(spec, 50_000_000) == 46_473_216 == real_size(spec)[0]
    with pytest.raises(graphs.ArchitectureTooLargeError, match="46,473,216 parameters"):
        graphs.check_size(spec, 46_000_000)


@pytest.mark.parametrize("options", [
    {"n_layer": 10**6, "n_embd": 8, "n_head": 2},  # tiny layers: over the module limit
    {"n_layer": 10**9, "n_embd": 2**20, "n_head": 2},  # huge ones
])
def test_any_declared_size_is_refused_in_milliseconds(options: dict):
    graphs.check_size(graphs.resolve("hf:gpt2", n_layer=1))  # imports are not what we time
    spec = graphs.resolve("hf:gpt2", **options)
    start = time.perf_counter()
    with pytest.raises(graphs.ArchitectureTooLargeError, match="the limit is 2,000,000,000 "
                                                               "parameters and 10,000 modules"):
        graphs.check_size(spec)
    assert time.perf_counter() - start < 0.5


def test_a_build_stops_at_its_module_budget():
    """A timm ViT with 100,000 blocks cannot be extrapolated: it is built until it has
    registered the budget's modules (here 200, to be quick)."""
    pytest.importorskip("timm")
    spec = graphs.resolve("timm:vit_tiny_patch16_224", depth=100_000)
    with pytest.raises(OverBudget), construction_budget(10**12, modules=200):
        spec.build()


@pytest.mark.slow
def test_builds_that_cannot_be_extrapolated_stop_at_the_module_limit():
    """The same ViT against the real limit: refused once it registers MAX_MODULES modules."""
    pytest.importorskip("timm")
    spec = graphs.resolve("timm:vit_tiny_patch16_224", depth=100_000)
    with pytest.raises(graphs.ArchitectureTooLargeError, match="counting stopped"):
        graphs.check_size(spec)
    assert EXACT_MODULES < MAX_MODULES


def test_options_the_config_rejects_are_build_errors():
    with pytest.raises(graphs.GraphBuildError, match="n_head"):
        graphs.check_size(graphs.resolve("hf:gpt2", n_layer=5, n_embd=65, n_head=4))


def test_from_hub_checks_the_size_before_building_a_downloaded_config(tmp_path: Path):
    """An init folder whose config.json declares a million layers: refused before any is built."""
    from transformers import GPT2Config

    tiny = {"n_layer": 1, "n_embd": 8, "n_head": 2, "vocab_size": 16, "n_positions": 8}
    torch.manual_seed(0)
    ghn = hyperinit.GraphHyperNetwork(
        hyperinit.GHNConfig(hidden=16, layers=1, heads=2, rank=4, features=8)).eval()
    folder = tmp_path / "init"
    hyperinit.save_init("hf:gpt2", folder, ghn, **tiny)
    info = {"arch": {"source": "hf", "name": "gpt2", "kwargs": {}}, "dtype": None}
    config = {**GPT2Config(**tiny).to_dict(), "hyperinit": info}
    (folder / "config.json").write_text(json.dumps(config))
    assert type(hyperinit.from_hub(str(folder))).__name__ == "GPT2LMHeadModel"

    (folder / "config.json").write_text(json.dumps({**config, "n_layer": 10**6}))
    start = time.perf_counter()
    with pytest.raises(graphs.ArchitectureTooLargeError, match=r"init: .*13,000,0\d\d modules"):
        hyperinit.from_hub(str(folder))
    assert time.perf_counter() - start < 1
    with pytest.raises(graphs.ArchitectureTooLargeError, match="max_params=None"):
        hyperinit.from_hub(str(folder), max_params=1000)
