"""`graphs.resolve` and `ArchSpec`: every spec source, dict specs, and canonical JSON.

tests/test_graphs.py covers torchvision and built-in ``hf:`` model types; this file covers
timm, ``python:`` import paths, local ``config.json`` files, well-known Hub sizes built on
``meta`` (with the memory that costs), dict specs and the JSON identity of a spec.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import transformers
from torch import nn

import graphs

PACKAGE = "hyperinit_test_userpkg"  # a name no installed package uses


def assert_every_param_owned(graph: graphs.ArchGraph, model: nn.Module) -> None:
    """Each of the model's parameter names appears once, with its shape, owned by a node
    the forward pass reached, and no op fell outside the vocabulary."""
    names = graph.param_names()
    assert sorted(names) == sorted(n for n, _ in model.named_parameters(remove_duplicate=False))
    shapes = {n: tuple(p.shape) for n, p in model.named_parameters()}
    for i, p in enumerate(graph.params):
        assert p.shape == shapes[p.name]
        assert i in graph.nodes[p.node].params
    assert not graph.unused and not graph.unrecognized


# ----- timm -----------------------------------------------------------------------------
def test_timm_model_builds_on_meta_and_traces():
    spec = graphs.resolve("timm:resnet18", num_classes=10)
    assert spec.kwargs == {"num_classes": 10}
    model = spec.build()
    assert all(p.device.type == "meta" for p in model.parameters())
    graph = graphs.build(spec)
    assert_every_param_owned(graph, model)
    fc = {p.name: p.shape for p in graph.params if p.name.startswith("fc.")}
    assert fc == {"fc.weight": (10, 512), "fc.bias": (10,)}  # num_classes reached timm
    assert {"conv", "batch_norm", "relu", "add", "linear"} <= {n.op for n in graph.nodes}


def test_unknown_timm_name_suggests_close_ones():
    with pytest.raises(graphs.UnknownArchitectureError, match="resnet18"):
        graphs.resolve("timm:resnet1B")


# ----- python:package.module:Class ------------------------------------------------------
USER_MODULE = '''
import torch
from torch import nn


class TinyNet(nn.Module):
    def __init__(self, width=8, classes=3):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(5, width), nn.GELU())
        self.head = nn.Linear(width, classes)

    def forward(self, x):
        return self.head(self.body(x))


def not_a_module(**kwargs):
    return 42
'''


@pytest.fixture
def user_package(tmp_path, monkeypatch):
    """A package ``PACKAGE.models`` on sys.path, forgotten again after the test."""
    pkg = tmp_path / PACKAGE
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "models.py").write_text(textwrap.dedent(USER_MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield f"{PACKAGE}.models"
    for name in [m for m in sys.modules if m == PACKAGE or m.startswith(f"{PACKAGE}.")]:
        del sys.modules[name]


def test_python_import_path_builds_and_traces(user_package):
    spec = graphs.resolve(f"python:{user_package}:TinyNet", width=6, num_classes=4)
    assert (spec.source, spec.name) == ("python", f"{user_package}:TinyNet")
    assert spec.kwargs == {"num_classes": 4, "width": 6}
    with pytest.raises(graphs.GraphBuildError, match="num_classes"):
        spec.build()  # TinyNet calls it `classes`: the constructor's error is reported
    spec = graphs.resolve(f"python:{user_package}:TinyNet", width=6, classes=4)
    model = spec.build()
    assert all(p.device.type == "meta" for p in model.parameters())
    graph = graphs.build(spec)  # no example inputs: guessed from the first Linear
    assert [n.op for n in graph.nodes] == ["input", "linear", "gelu", "linear"]
    assert_every_param_owned(graph, model)
    first = {graph.params[i].name: graph.params[i].shape for i in graph.nodes[1].params}
    assert first == {"body.0.weight": (6, 5), "body.0.bias": (6,)}  # width reached TinyNet


def test_python_import_path_errors_are_clear(user_package):
    with pytest.raises(graphs.UnknownArchitectureError, match="package.module:ClassName"):
        graphs.resolve(f"python:{user_package}")
    with pytest.raises(graphs.UnknownArchitectureError, match="cannot import"):
        graphs.resolve(f"python:{user_package}:Missing").build()
    with pytest.raises(graphs.UnknownArchitectureError, match="cannot import"):
        graphs.resolve(f"python:{PACKAGE}.nowhere:TinyNet").build()
    with pytest.raises(graphs.UnknownArchitectureError, match="returned int, not an nn.Module"):
        graphs.resolve(f"python:{user_package}:not_a_module").build()


# ----- hf: local config.json ------------------------------------------------------------
@pytest.fixture
def gpt2_config(tmp_path) -> Path:
    """A one-layer GPT-2 config.json with a 100-token vocabulary."""
    path = tmp_path / "config.json"
    transformers.GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=100, n_positions=32,
                            bos_token_id=0, eos_token_id=0).to_json_file(path)
    return path


def test_local_config_json_resolves_and_traces(gpt2_config):
    spec = graphs.resolve(f"hf:{gpt2_config}")
    model = spec.build()
    assert model.config.vocab_size == 100 and model.config.n_layer == 1
    assert all(p.device.type == "meta" for p in model.parameters())
    graph = graphs.build(spec)
    assert_every_param_owned(graph, model)
    wte = next(p for p in graph.params if p.name.endswith("wte.weight"))
    assert wte.shape == (100, 32) and wte.tied == ("lm_head.weight",)
    assert "attention" in {n.op for n in graph.nodes}
    # The folder holding config.json is the same architecture; overrides change it.
    assert graphs.build(graphs.resolve(f"hf:{gpt2_config.parent}")).arch_hash == graph.arch_hash
    deeper = graphs.build(graphs.resolve(f"hf:{gpt2_config}", n_layer=2))
    assert deeper.num_nodes > graph.num_nodes and deeper.arch_hash != graph.arch_hash


def test_hf_name_is_the_registry_never_a_folder_of_the_working_directory(gpt2_config,
                                                                         monkeypatch):
    """A folder ``gpt2/`` beside the user (``hyperinit pull ... --out gpt2`` makes one) is read
    only when named as a path: ``hf:./gpt2``, ``hf:./gpt2/config.json`` or absolute."""
    folder = gpt2_config.parent / "gpt2"
    folder.mkdir()
    gpt2_config.rename(folder / "config.json")
    monkeypatch.chdir(folder.parent)
    assert graphs.resolve("hf:gpt2").build().config.n_layer == 12  # the registry's GPT-2
    for local in ("hf:./gpt2", "hf:./gpt2/config.json", f"hf:{folder}"):
        assert graphs.resolve(local).build().config.n_layer == 1, local
    with pytest.raises(graphs.UnknownArchitectureError, match=r"explicit path: hf:\./gpt2/c"):
        graphs.resolve("hf:gpt2/config.json")


def test_missing_config_json_fails_clearly(tmp_path):
    with pytest.raises(graphs.UnknownArchitectureError, match="does not exist"):
        graphs.resolve(f"hf:{tmp_path / 'absent' / 'config.json'}")


# ----- hf: well-known sizes, and memory ----------------------------------------------------
PEAK_RSS_SCRIPT = """
import json, resource, sys
import graphs, transformers  # imports are not what we measure

def peak_mb():
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 2**20 if sys.platform == "darwin" else kb / 2**10

before = peak_mb()
spec = graphs.resolve("hf:gpt2-large")
model = spec.build()
graph = graphs.build(spec)
print(json.dumps({
    "growth_mb": peak_mb() - before,
    "all_meta": all(p.device.type == "meta" for p in model.parameters()),
    "num_params": graph.num_params,
    "layers": model.config.n_layer,
    "unowned": sorted(set(n for n, _ in model.named_parameters(remove_duplicate=False))
                      ^ set(graph.param_names())),
}))
"""


def test_gpt2_large_builds_on_meta_with_flat_memory():
    """774M parameters are 3 GB in fp32; building and tracing on meta stays far below."""
    proc = subprocess.run([sys.executable, "-c", PEAK_RSS_SCRIPT], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["all_meta"]
    assert result["layers"] == 36
    assert 770_000_000 < result["num_params"] < 780_000_000
    assert result["unowned"] == []
    assert result["growth_mb"] < 1500, f"peak RSS grew by {result['growth_mb']:.0f} MB"


def test_meta_init_applies_to_its_own_thread_only():
    """Threads interleave: A opens meta_init, B builds outside it, C opens it while A is
    open and closes it after A. Only A's and C's modules are on meta, and the patch is
    gone at the end (a process-wide patch would leak B onto meta and C's exit would
    restore A's patched function)."""
    import threading

    original = nn.Module.register_parameter
    a_open, b_done, c_open, a_closed = (threading.Event() for _ in range(4))
    devices = {}

    def a():
        with graphs.meta_init():
            a_open.set()
            b_done.wait(10)
            devices["a"] = nn.Linear(2, 2).weight.device.type
            c_open.wait(10)
        a_closed.set()

    def b():
        a_open.wait(10)
        devices["b"] = nn.Linear(2, 2).weight.device.type
        b_done.set()

    def c():
        b_done.wait(10)
        with graphs.meta_init():
            c_open.set()
            a_closed.wait(10)
            devices["c"] = nn.Linear(2, 2).weight.device.type

    threads = [threading.Thread(target=f) for f in (a, b, c)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert devices == {"a": "meta", "b": "cpu", "c": "meta"}
    assert nn.Module.register_parameter is original
    assert nn.Linear(2, 2).weight.device.type == "cpu"


# ----- dict specs -------------------------------------------------------------------------
def test_dict_spec_equals_string_spec():
    from_dict = graphs.resolve({"source": "torchvision", "name": "resnet18",
                                "kwargs": {"num_classes": 10}})
    assert from_dict == graphs.resolve("torchvision:resnet18", num_classes=10)
    assert graphs.resolve({"source": "hf", "name": "gpt2"}) == graphs.resolve("hf:gpt2")
    # Keyword arguments of the call override the dict's.
    merged = graphs.resolve({"source": "hf", "name": "gpt2", "kwargs": {"n_layer": 2}},
                            n_layer=3, num_classes=5)
    assert merged.kwargs == {"n_layer": 3, "num_labels": 5}


@pytest.mark.parametrize(("bad", "message"), [
    ({"name": "resnet18"}, "needs 'source' and 'name'"),
    ({"source": "torchvision"}, "needs 'source' and 'name'"),
    ({"source": "torchvision", "name": "resnet18", "weights": "x"}, "got keys"),
    ({"source": "keras", "name": "resnet18"}, "SOURCE:NAME"),
    ({"source": "torchvision", "name": "resnet5O"}, "resnet50"),
    ({"source": "torchvision", "name": "resnet18", "kwargs": [10]}, "'kwargs' must be a dict"),
])
def test_bad_dict_specs_fail_clearly(bad, message):
    with pytest.raises(graphs.UnknownArchitectureError, match=message):
        graphs.resolve(bad)


def test_non_spec_objects_are_rejected():
    with pytest.raises(graphs.UnknownArchitectureError, match="got int"):
        graphs.resolve(42)


# ----- canonical JSON -------------------------------------------------------------------
@pytest.mark.parametrize("spec", [
    graphs.resolve("torchvision:resnet18", num_classes=10),
    graphs.resolve("hf:gpt2", num_classes=3, n_layer=2, n_head=4, activation_function="relu"),
    graphs.resolve("hf:gpt2-large"),
])
def test_to_json_is_canonical_and_round_trips(spec):
    text = spec.to_json()
    assert text == json.dumps(json.loads(text), sort_keys=True, separators=(",", ":"))
    assert list(json.loads(text)) == ["kwargs", "name", "source"]
    assert graphs.resolve(json.loads(text)) == spec
    assert graphs.resolve(json.loads(text)).to_json() == text


def test_to_json_ignores_keyword_order():
    a = graphs.resolve("hf:gpt2", n_layer=2, n_head=4, n_embd=64)
    b = graphs.resolve("hf:gpt2", n_embd=64, n_head=4, n_layer=2)
    assert a.to_json() == b.to_json()
    assert a.to_json() == ('{"kwargs":{"n_embd":64,"n_head":4,"n_layer":2},'
                           '"name":"gpt2","source":"hf"}')
    # Nested config values are sorted too.
    c = graphs.resolve("hf:gpt2", task_specific_params={"b": 1, "a": 2})
    assert '"task_specific_params":{"a":2,"b":1}' in c.to_json()
