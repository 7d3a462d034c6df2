"""Graph extraction over every torchvision classifier, transformers configs and user modules."""

from __future__ import annotations

import subprocess
import sys
import warnings

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

import graphs
from graphs.pyg import Batch

TORCHVISION = torchvision.models.list_models(module=torchvision.models)
HF = ["hf:gpt2", "hf:llama", "hf:bert", "hf:vit", "hf:t5"]
HF_SMALL = {"gpt2": {"n_layer": 2}, "llama": {"num_hidden_layers": 2, "hidden_size": 128,
            "intermediate_size": 256, "num_attention_heads": 4, "num_key_value_heads": 2},
            "bert": {"num_hidden_layers": 2}, "vit": {"num_hidden_layers": 2},
            "t5": {"num_layers": 2}}


def assert_faithful(graph: graphs.ArchGraph, model: nn.Module, unused: int = 0,
                    unrecognized: dict[str, int] | None = None) -> None:
    """Every parameter name appears once, with the model's shape, and nothing else does;
    ``unused`` of them are unconnected (a partial trace); ``unrecognized`` ops, if any, as
    given."""
    names = graph.param_names()
    assert len(names) == len(set(names))
    expected = dict(model.named_parameters(remove_duplicate=False))
    assert set(names) == set(expected)
    for p in graph.params:
        assert p.shape == tuple(expected[p.name].shape)
        assert 0 < p.node < graph.num_nodes and graph.nodes[p.node].params.count(
            graph.params.index(p)) == 1
    assert len(graph.unused) == unused and graph.unrecognized == (unrecognized or {})
    assert all(src < dst for src, dst in graph.edges), "nodes are in topological order"


def test_all_torchvision_classifiers_are_covered():
    assert len(TORCHVISION) == 80


@pytest.mark.parametrize("name", TORCHVISION)
def test_torchvision_graph(name):
    spec = graphs.resolve(f"torchvision:{name}", num_classes=10)
    model = spec.build()
    assert all(p.device.type == "meta" for p in model.parameters())
    assert_faithful(graphs.build(spec), model)


@pytest.mark.parametrize("name", HF)
def test_transformers_graph(name):
    spec = graphs.resolve(name, **HF_SMALL[name.split(":")[1]])
    graph = graphs.build(spec)
    assert_faithful(graph, spec.build())
    assert "attention" in {n.op for n in graph.nodes}


@pytest.mark.parametrize(("name", "options"), [
    ("deit", {"num_hidden_layers": 1}),  # two classifier heads listed: the plain one is used
    ("convnext", {"depths": [1, 1, 1, 1]}),  # no attention, so no attention implementation
])
def test_transformers_image_classifiers_graph(name, options):
    spec = graphs.resolve(f"hf:{name}", num_classes=10, **options)
    model = spec.build()
    assert type(model).__name__.endswith("ForImageClassification")
    assert_faithful(graphs.build(spec), model)


def test_classifier_pooling_at_eos_traces_the_body():
    spec = graphs.resolve("hf:t5", num_classes=3, num_layers=1)  # pools at the EOS token
    with pytest.warns(graphs.PartialGraphWarning, match="unique_consecutive.*classification_head"):
        graph = graphs.build(spec)
    assert_faithful(graph, spec.build(), unused=4)
    assert sorted(graph.unused) == sorted(
        n for n, _ in spec.build().named_parameters() if n.startswith("classification_head."))


def test_gpt2_weight_tying_is_one_tensor():
    graph = graphs.build(graphs.resolve("hf:gpt2", n_layer=1))
    wte = next(p for p in graph.params if p.name.endswith("wte.weight"))
    assert wte.tied == ("lm_head.weight",) and wte.role == "embedding"


class Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(8, 8), nn.Linear(8, 8)
        self.out = nn.Linear(16, 4)

    def forward(self, x):
        h = F.relu(self.a(x)) + x
        k = torch.cat([h, torch.sigmoid(self.b(x))], dim=-1)
        q = k.view(2, 1, 2, 8)
        return self.out(F.scaled_dot_product_attention(q, q, q).reshape(2, 16))


def test_user_module_ops_and_edges():
    graph = graphs.build(Residual(), torch.randn(2, 8))
    ops = [n.op for n in graph.nodes]
    for op in ("input", "linear", "relu", "add", "concat", "sigmoid", "attention"):
        assert op in ops, op
    assert_faithful(graph, Residual())
    add = ops.index("add")
    preds = {graph.nodes[s].op for s, d in graph.edges if d == add}
    assert preds == {"relu", "input"}


def test_default_inputs_are_guessed_for_plain_modules():
    mlp = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3))
    assert [n.op for n in graphs.build(mlp).nodes] == ["input", "linear", "tanh", "linear"]
    cnn = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2), nn.Flatten(), nn.Linear(4 * 15 * 15, 2))
    graph = graphs.build(cnn)
    assert graph.nodes[1].attrs["stride"] == 2


def test_graph_is_deterministic_and_ignores_values():
    a = graphs.build(torchvision.models.resnet18(num_classes=10))
    b = graphs.build(graphs.resolve("torchvision:resnet18", num_classes=10))
    assert a.arch_hash == b.arch_hash and a.canonical() == b.canonical()
    c = graphs.build(graphs.resolve("torchvision:resnet18", num_classes=100))
    assert c.arch_hash != a.arch_hash


def test_arch_hash_is_stable_across_processes():
    code = "import graphs; print(graphs.build('torchvision:mobilenet_v3_small').arch_hash)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == graphs.build("torchvision:mobilenet_v3_small").arch_hash


def test_pyg_import_shows_no_torchscript_deprecation():
    """Importing torch_geometric calls torch.jit.script, which newer PyTorch answers with a
    FutureWarning on every command; graphs.pyg is the one place it is imported, quietly."""
    code = ("import graphs, graphs.pyg\n"
            "graphs.pyg.Batch.from_data_list([graphs.build('torchvision:resnet18').to_data()])")
    out = subprocess.run(
        [sys.executable, "-W", "error:`torch.jit.script` is deprecated:FutureWarning", "-c",
         code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_to_data_and_batch():
    g1 = graphs.build(nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2)))
    g2 = graphs.build(graphs.resolve("torchvision:resnet18"))
    d1, d2 = g1.to_data(), g2.to_data()
    assert d1.num_nodes == 4 and d1.edge_index.shape == (2, 3)
    assert d1.depth.tolist() == [0, 1, 2, 3]
    assert d1.dist.max() == 3  # input -> last linear
    batch = Batch.from_data_list([d1, d2])
    assert batch.num_nodes == g1.num_nodes + g2.num_nodes
    assert batch.dist_index.max() < batch.num_nodes
    assert batch.dist_index[:, d1.dist.numel():].min() >= g1.num_nodes


def test_graph_batch_matches_pyg_batch_and_encodes_alike():
    """Generators batch with graphs.batch.GraphBatch (no torch_geometric import); it holds
    what PyG's Batch of to_data() holds, and the encoder reads both to the same embeddings."""
    from graphs.batch import GraphBatch
    from hyperinit.encoder import GraphEncoder

    parts = [graphs.build(nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))),
             graphs.build(graphs.resolve("torchvision:resnet18"))]
    ours, theirs = GraphBatch.from_graphs(parts), Batch.from_data_list([g.to_data() for g in parts])
    for key in ("op", "shape", "attr", "edge_index", "in_degree", "out_degree", "depth",
                "dist_index", "dist", "batch", "ptr"):
        assert torch.equal(getattr(ours, key), getattr(theirs, key)), key
    torch.manual_seed(0)
    encoder = GraphEncoder(32, 2, 4).eval()
    with torch.no_grad():
        assert torch.equal(encoder(ours), encoder(theirs))


def test_unknown_names_suggest_close_ones():
    with pytest.raises(graphs.UnknownArchitectureError, match="resnet50"):
        graphs.resolve("torchvision:resnet5O")
    with pytest.raises(graphs.UnknownArchitectureError, match="gpt2"):
        graphs.resolve("hf:gtp2")
    with pytest.raises(graphs.UnknownArchitectureError, match="SOURCE:NAME"):
        graphs.resolve("resnet50")


def test_failing_forward_names_model_and_remedy():
    model = nn.Sequential(nn.Linear(5, 7))
    with pytest.raises(graphs.GraphBuildError, match=r"Sequential.*example_inputs"):
        graphs.build(model, torch.randn(2, 9))


def test_detection_models_build_offline_and_trace_up_to_post_processing():
    spec = graphs.resolve("torchvision:fasterrcnn_mobilenet_v3_large_320_fpn", num_classes=3)
    model = spec.build(meta=True)  # no ImageNet backbone download
    assert model.roi_heads.box_predictor.cls_score.out_features == 3
    with pytest.warns(graphs.PartialGraphWarning, match=r"stopped at aten.nonzero.*the other 8 "
                                                        r"\(roi_heads.box_head.fc6.weight"):
        graph = graphs.build(spec)
    assert_faithful(graph, model, unused=8)
    assert all(name.startswith("roi_heads.") for name in graph.unused)
    backbone = [n for n in graph.nodes if n.op == "conv"]
    assert len(backbone) > 50  # backbone, FPN and RPN head are traced, with their edges


@pytest.mark.parametrize(("name", "unrecognized"), [
    ("r3d_18", {}),  # video: 16-frame clips
    ("raft_small", {"GridSampler2D": 48}),  # optical flow: an image pair; warps are generic
    ("ssdlite320_mobilenet_v3_large", {}),  # its constructor runs a forward: built on CPU
])
def test_torchvision_video_flow_and_detection_models_trace(name, unrecognized):
    spec = graphs.resolve(f"torchvision:{name}")
    with warnings.catch_warnings():
        warnings.simplefilter("error", graphs.PartialGraphWarning)
        graph = graphs.build(spec)
    assert_faithful(graph, spec.build(), unrecognized=unrecognized)


OTHER_TASKS = [name for module in (torchvision.models.detection, torchvision.models.segmentation,
                                   torchvision.models.video, torchvision.models.optical_flow)
               for name in torchvision.models.list_models(module=module)]


@pytest.mark.slow
@pytest.mark.parametrize("name", OTHER_TASKS)
def test_every_torchvision_detection_segmentation_video_and_flow_model_traces(name):
    spec = graphs.resolve(f"torchvision:{name}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", graphs.PartialGraphWarning)  # detection heads
        graph = graphs.build(spec)
    expected = {n for n, _ in spec.build().named_parameters(remove_duplicate=False)}
    assert set(graph.param_names()) == expected


class NonzeroFirst(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 4)

    def forward(self, x):
        return self.linear(x[x.sum(1).nonzero()[:, 0]])


def test_data_dependent_shapes_before_any_module_say_what_to_do():
    with pytest.raises(graphs.GraphBuildError, match=r"NonzeroFirst.*aten.nonzero.*depends on "
                                                     r"the input values.*no module finished"):
        graphs.build(NonzeroFirst(), torch.randn(3, 4))


def test_non_module_is_rejected():
    with pytest.raises(graphs.GraphBuildError, match="nn.Module"):
        graphs.build(42)
