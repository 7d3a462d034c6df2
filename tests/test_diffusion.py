"""Weight diffusion: exact tokenization, training, sampling, checkpoints and bad inputs."""

from __future__ import annotations

import json
from dataclasses import asdict, replace

import pytest
import torch
from safetensors import safe_open
from torch import nn

import graphs
from hyperinit import CheckpointError
from hyperinit.cli import main
from hyperinit.diffusion import (
    SCHEDULER_FILE,
    DiffusionConfig,
    WeightDiffusion,
    WeightTokenizer,
    diffusion_loss,
    ranked_descriptor,
    row_classes,
    sample,
    sample_state_dicts,
    snr_weights,
)

TINY = DiffusionConfig(chunk=16, hidden=16, layers=1, heads=2, graph_layers=1, positions=16)


def mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))


@pytest.fixture(scope="module")
def graph() -> graphs.ArchGraph:
    return graphs.build(mlp())


@pytest.fixture(scope="module")
def zoo(graph) -> list[tuple[dict[str, torch.Tensor], graphs.ArchGraph]]:
    """Eight "trained" checkpoints: one init plus small deterministic perturbations."""
    torch.manual_seed(0)
    base = mlp().state_dict()
    return [({k: v + 0.05 * torch.randn_like(v) for k, v in base.items()}, graph)
            for _ in range(8)]


def fit(model: WeightDiffusion, zoo, steps: int, lr: float = 1e-3,
        tasks: list | None = None) -> list[float]:
    """A few AdamW steps on the whole in-memory zoo (the project's loop needs a zoo folder:
    see test_diffusion_training.py); returns the loss of every step."""
    batch = [model.tokenizer.encode(state, graph) for state, graph in zoo]
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        loss = diffusion_loss(model, batch, tasks)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


@pytest.fixture(scope="module")
def trained(zoo) -> tuple[WeightDiffusion, list[float]]:
    torch.manual_seed(0)
    model = WeightDiffusion(TINY)
    return model, fit(model, zoo, steps=50, lr=3e-3)


def fixed_loss(model: WeightDiffusion, zoo) -> float:
    """Diffusion loss over the whole zoo with fixed noise and timesteps, averaged."""
    batch = [model.tokenizer.encode(state, graph) for state, graph in zoo]
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(123)
        return sum(diffusion_loss(model, batch).item() for _ in range(4)) / 4


def test_tokenize_round_trip_is_exact(graph):
    state = mlp().state_dict()
    state["0.bias"] = torch.zeros(16)  # constant tensor: std floor, still exact
    state["2.weight"] = torch.randn(4, 16) * 1e4 + 3.0
    tok = WeightTokenizer(chunk=16)
    tokens, meta = tok.encode(state, graph)
    # 16 + 128 + 4 + 64 values -> 1 + 8 + 1 + 4 tokens, the tails zero-padded
    assert tokens.shape == (14, 16) and tokens.dtype == torch.float32
    assert meta.position.tolist() == [0, 0, 1, 2, 3, 4, 5, 6, 7, 0, 0, 1, 2, 3]
    assert meta.valid[9].item() == 4 and (tokens[9, 4:] == 0).all()
    assert meta.layer.tolist() == [0] + [1] * 8 + [2] + [3] * 4
    assert meta.node.tolist() == [graph.params[i].node for i in meta.layer.tolist()]
    decoded = tok.decode(tokens, meta)
    assert set(decoded) == set(state)
    for name, value in state.items():
        assert torch.equal(decoded[name], value), name
    # the model-facing normalization is standardized and inverts to float precision
    normalized = meta.normalize(tokens)
    assert abs(normalized[meta.mask].mean().item()) < 1e-5
    assert torch.allclose(meta.denormalize(normalized)[meta.mask], tokens[meta.mask].double())
    double = {k: v.double() for k, v in state.items()}
    tokens64, meta64 = tok.encode(double, graph)
    assert tokens64.dtype == torch.float64
    assert all(torch.equal(tok.decode(tokens64, meta64)[k], v) for k, v in double.items())


def test_encode_rejects_state_of_another_architecture(graph):
    tok = WeightTokenizer(chunk=16)
    wider = nn.Sequential(nn.Linear(8, 17), nn.ReLU(), nn.Linear(17, 4)).state_dict()
    with pytest.raises(ValueError, match=r"0\.bias has shape \(17,\) but .* expects \(16,\)"):
        tok.encode(wider, graph)
    with pytest.raises(ValueError, match="no parameter '2.weight'"):
        tok.encode({k: v for k, v in mlp().state_dict().items() if k != "2.weight"}, graph)


def test_training_lowers_the_loss(zoo, trained):
    model, losses = trained
    assert len(losses) == 50 and all(map(torch.isfinite, torch.tensor(losses)))
    untrained = WeightDiffusion(TINY)
    assert fixed_loss(model, zoo) < 0.8 * fixed_loss(untrained, zoo)


def test_clean_sample_prediction_learns_and_round_trips(tmp_path, graph, zoo):
    torch.manual_seed(0)
    model = WeightDiffusion(replace(TINY, prediction_type="sample"))
    assert model.scheduler.config.prediction_type == "sample"
    before = fixed_loss(model, zoo)
    fit(model, zoo, steps=30, lr=3e-3)
    assert fixed_loss(model, zoo) < 0.8 * before
    model.save_pretrained(tmp_path)
    loaded = WeightDiffusion.from_pretrained(tmp_path)
    assert loaded.scheduler.config.prediction_type == "sample"
    ours, theirs = (sample_state_dicts(m, graph, n=1, seed=2, steps=3)[0]
                    for m in (model, loaded))
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    with pytest.raises(ValueError, match="prediction_type must be one of epsilon, sample"):
        DiffusionConfig(prediction_type="v_prediction")


def test_snr_boost_weighs_low_noise_timesteps_up(zoo):
    scheduler = WeightDiffusion(TINY).scheduler
    steps = torch.arange(scheduler.config.num_train_timesteps)
    assert torch.equal(snr_weights(scheduler, steps, 0.0), torch.ones(len(steps)))
    boosted = snr_weights(scheduler, steps, 20.0)
    assert boosted[0] == 1 and abs(boosted[-1] - 1 / 21) < 1e-3
    assert (boosted.diff() <= 0).all()  # noisier timesteps never weigh more
    torch.manual_seed(0)
    model = WeightDiffusion(replace(TINY, prediction_type="sample", snr_boost=20.0))
    before = fixed_loss(model, zoo)
    fit(model, zoo, steps=30, lr=3e-3)
    assert fixed_loss(model, zoo) < 0.8 * before
    with pytest.raises(ValueError, match="snr_boost must be at least 0"):
        DiffusionConfig(snr_boost=-1.0)


def test_sampling_is_seeded_and_well_formed(graph, trained):
    model, _ = trained
    first = sample_state_dicts(model, graph, n=2, seed=0, steps=5)
    again = sample_state_dicts(model, graph, n=2, seed=0, steps=5)
    other = sample_state_dicts(model, graph, n=2, seed=1, steps=5)
    assert len(first) == 2
    for state in first:
        assert set(state) == set(graph.param_names())
        for p in graph.params:
            assert state[p.name].shape == p.shape and torch.isfinite(state[p.name]).all()
    assert all(torch.equal(a[k], b[k]) for a, b in zip(first, again, strict=True) for k in a)
    assert not torch.equal(first[0]["0.weight"], other[0]["0.weight"])
    assert not torch.equal(first[0]["0.weight"], first[1]["0.weight"])

    streamed = list(model.iter_tensors(graph, seed=1))  # what predict/save_init consume
    assert [name for name, _ in streamed] == [p.name for p in graph.params]
    default = sample_state_dicts(model, graph, seed=1)[0]
    assert all(torch.equal(t, default[name]) for name, t in streamed)


def test_sampling_clips_to_predicted_stats(graph, trained):
    """The last DDIM step returns the clipped x0: within mean +- 4 std of each tensor."""
    model, _ = trained
    with torch.no_grad():
        (emb,) = model.embed([graph])
        stats = model.predict_stats(model.tokenizer.layout(graph), emb)
    state = sample_state_dicts(model, graph, seed=0, steps=5)[0]
    for p, (mean, log_std) in zip(graph.params, stats.tolist(), strict=True):
        assert (state[p.name] - mean).abs().max() <= 4 * torch.tensor(log_std).exp() + 1e-5


def test_sample_resolves_any_module_and_resets_buffers(trained):
    model, _ = trained
    # an architecture outside the zoo, with BatchNorm buffers: one model serves several
    arch = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 4))
    arch[1].running_mean.fill_(5.0)
    states = sample(arch, generator=model, n=2, seed=3, steps=3)
    reference = arch.state_dict()
    for state in states:
        assert set(state) == set(reference)
        assert all(state[k].shape == v.shape and state[k].dtype == v.dtype
                   for k, v in reference.items())
        assert torch.equal(state["1.running_mean"], torch.zeros(16))
    fresh = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 4))
    fresh.load_state_dict(states[0], strict=True)
    assert torch.isfinite(fresh.eval()(torch.randn(3, 8))).all()


def test_save_and_load_give_identical_samples_and_schedule(tmp_path, graph, trained):
    model, _ = trained
    model.scheduler.register_to_config(beta_end=0.03)  # a non-default value must survive
    try:
        model.save_pretrained(tmp_path)
        loaded = WeightDiffusion.from_pretrained(tmp_path)
    finally:
        model.scheduler.register_to_config(beta_end=2e-2)
    assert json.loads((tmp_path / "config.json").read_text()) == {
        "kind": "weight-diffusion", **asdict(TINY), "defaults": {"noise": 0.0, "orth": False,
                                                         "max_numel": None, "max_gain": None,
                                                         "scale_by_depth": False}}
    assert (tmp_path / SCHEDULER_FILE).is_file()
    assert loaded.scheduler.config.beta_end == 0.03
    assert loaded.scheduler.config.beta_schedule == "linear"
    loaded.scheduler.register_to_config(beta_end=2e-2)
    ours, theirs = (sample_state_dicts(m, graph, n=1, seed=7, steps=4)[0]
                    for m in (model, loaded))
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)


def test_bad_checkpoints_raise_checkpoint_error(tmp_path, trained):
    model, _ = trained
    model.save_pretrained(tmp_path)
    (tmp_path / SCHEDULER_FILE).unlink()
    with pytest.raises(CheckpointError, match=SCHEDULER_FILE):
        WeightDiffusion.from_pretrained(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"\x00not safetensors at all")
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        WeightDiffusion.from_pretrained(tmp_path)
    wider = WeightDiffusion(DiffusionConfig(**{**asdict(TINY), "hidden": 32}))
    wider.save_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"kind": "weight-diffusion",
                                                      **asdict(TINY)}))
    with pytest.raises(CheckpointError, match="wrong shapes"):
        WeightDiffusion.from_pretrained(tmp_path)


def test_ranked_descriptor_names_the_class_of_each_rank():
    tasks = torch.tensor([[0.0, 1.0, 0.0, 1.0], [1.0, 0.0, 0.5, 0.0]])
    ranked = ranked_descriptor(tasks).view(2, 4, 4)  # [task, rank, class]
    assert ranked[0].nonzero().tolist() == [[0, 1], [1, 3]]  # classes 1 then 3
    assert ranked[1].nonzero().tolist() == [[0, 0], [1, 2]] and ranked[1, 1, 2] == 0.5
    assert not ranked_descriptor(torch.zeros(1, 4)).any()


def test_row_classes_give_each_classifier_value_its_class(graph):
    """mlp()'s classifier is Linear(16, 4): at chunk 16 each weight token is one row, and
    the bias is one token of four values; row r belongs to the task's r-th class."""
    meta = WeightTokenizer(16).layout(graph)
    task = torch.tensor([0.0, 1.0, 0.0, 1.0, 1.0, 1.0])  # classes 1, 3, 4, 5
    index, classes = row_classes(meta, task)
    head = [i for i, p in enumerate(graph.params) if p.name.startswith("2.")]
    assert sorted(meta.layer[index].unique().tolist()) == sorted(head)
    layer = {p.name: i for i, p in enumerate(graph.params)}
    weight = index[meta.layer[index] == layer["2.weight"]]
    bias = index[meta.layer[index] == layer["2.bias"]]
    rows = classes[torch.isin(index, weight)]
    assert rows.tolist() == [[c] * 16 for c in (1, 3, 4, 5)]
    assert classes[torch.isin(index, bias)].tolist() == [[1, 3, 4, 5] + [-1] * 12]
    # a span sees only its own tokens, numbered within it
    later, _ = row_classes(meta, task, slice(int(index.min()), None))
    assert later.tolist() == (index - index.min()).tolist()
    # a task of another size has no classifier in this graph
    assert len(row_classes(meta, torch.tensor([1.0, 1.0, 0, 0, 0, 0]))[0]) == 0


def test_class_rows_are_trained_and_used_in_sampling(graph, zoo, tmp_path):
    torch.manual_seed(0)
    model = WeightDiffusion(DiffusionConfig(**{**asdict(TINY), "task_dim": 6,
                                               "class_rows": True}))
    tasks = [[0.0, 1.0, 0.0, 1.0, 1.0, 1.0], [1.0, 1.0, 0.0, 1.0, 0.0, 1.0]] * 4
    fit(model, zoo, steps=3, tasks=tasks)
    assert model.row_class.weight.abs().sum() > 0  # training reached it
    with_rows = sample_state_dicts(model, graph, seed=0, steps=2, task=tasks[0])[0]
    model.save_pretrained(tmp_path)
    loaded = WeightDiffusion.from_pretrained(tmp_path)
    assert loaded.config.class_rows
    again = sample_state_dicts(loaded, graph, seed=0, steps=2, task=tasks[0])[0]
    assert torch.equal(again["2.weight"], with_rows["2.weight"])
    model.row_class = None  # the same weights without row classes sample otherwise
    without = sample_state_dicts(model, graph, seed=0, steps=2, task=tasks[0])[0]
    assert not torch.equal(without["2.weight"], with_rows["2.weight"])
    assert WeightDiffusion(DiffusionConfig(**{**asdict(TINY), "task_dim": 6,
                                              "class_rows": False})).row_class is None
    assert WeightDiffusion(TINY).row_class is None  # unconditional: no task, no classes


@pytest.mark.parametrize("ranked", [False, True])
def test_classifier_free_guidance_on_task_descriptors(graph, zoo, tmp_path, ranked):
    torch.manual_seed(0)
    model = WeightDiffusion(DiffusionConfig(**{**asdict(TINY), "task_dim": 3,
                                               "ranked_task": ranked}))
    assert (model.task.ranks is not None) == ranked
    tasks = [torch.tensor([1.0, 1.0, 0.0]) if i % 2 else [0.0, 1.0, 1.0] for i in range(len(zoo))]
    fit(model, zoo, steps=3, tasks=tasks)
    plain, guided = (sample_state_dicts(model, graph, seed=0, steps=3, task=tasks[1],
                                        guidance=g)[0] for g in (1.0, 3.0))
    assert all(torch.isfinite(v).all() for v in guided.values())
    assert not torch.equal(plain["0.weight"], guided["0.weight"])
    other, unseen, free = (sample_state_dicts(model, graph, seed=0, steps=3, task=t)[0]
                           for t in (tasks[0], [1.0, 0.0, 1.0], None))
    assert not torch.equal(plain["0.weight"], other["0.weight"])  # the descriptor matters
    assert not torch.equal(unseen["0.weight"], free["0.weight"])  # unseen tasks have one too
    model.save_pretrained(tmp_path)
    loaded = WeightDiffusion.from_pretrained(tmp_path)
    again = sample_state_dicts(loaded, graph, seed=0, steps=3, task=tasks[1])[0]
    assert loaded.config.task_dim == 3 and torch.equal(again["0.weight"], plain["0.weight"])
    assert loaded.config.ranked_task == ranked


def test_task_arguments_are_checked(graph, zoo):
    conditional = WeightDiffusion(DiffusionConfig(**{**asdict(TINY), "task_dim": 3}))
    with pytest.raises(ValueError, match=r"descriptors of 3 values .*got shape \(2,\)"):
        sample_state_dicts(conditional, graph, task=[1.0, 0.0])
    with pytest.raises(ValueError, match="a descriptor vector of 3 numbers, or the names of "
                                         "its classes, got 1"):
        sample_state_dicts(conditional, graph, task=1)
    with pytest.raises(ValueError, match="non-finite"):
        sample_state_dicts(conditional, graph, task=[1.0, float("nan"), 0.0])
    batch = [conditional.tokenizer.encode(state, g) for state, g in zoo[:2]]
    with pytest.raises(ValueError, match="tasks has 1 entries for a batch of 2"):
        diffusion_loss(conditional, batch, [[1.0, 1.0, 0.0]])
    with pytest.raises(ValueError, match=r"unconditional \(task_dim 0\)"):
        sample_state_dicts(WeightDiffusion(TINY), graph, task=[1.0, 0.0, 1.0])
    with pytest.raises(ValueError, match="task_dim must be at least 0"):
        DiffusionConfig(task_dim=-1)


def test_a_config_with_a_task_id_table_is_refused(tmp_path):
    WeightDiffusion(TINY).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    del config["task_dim"]
    (tmp_path / "config.json").write_text(json.dumps({**config, "num_tasks": 0}))
    assert WeightDiffusion.from_pretrained(tmp_path).config.task_dim == 0
    (tmp_path / "config.json").write_text(json.dumps({**config, "num_tasks": 2}))
    with pytest.raises(CheckpointError, match="task-id tables were replaced"):
        WeightDiffusion.from_pretrained(tmp_path)


def test_predict_cli_takes_a_diffusion_folder(tmp_path, trained, capsys):
    trained[0].save_pretrained(tmp_path / "diffusion")
    out = tmp_path / "linear.safetensors"
    code = main(["predict", "python:torch.nn:Linear", "--config",
                 '{"in_features": 8, "out_features": 16}', "--generator",
                 str(tmp_path / "diffusion"), "--seed", "3", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    with safe_open(out, "pt") as f:
        assert f.metadata()["hyperinit.generator"].startswith("diffusion@")
        assert f.metadata()["hyperinit.seed"] == "3"
        weight = f.get_tensor("weight")
    assert weight.shape == (16, 8) and torch.isfinite(weight).all()
    big = ["predict", "python:torch.nn:Linear", "--config",  # 10,250 tokens: 41 windows
           '{"in_features": 1024, "out_features": 160}', "--generator",
           str(tmp_path / "diffusion"), "--out", str(tmp_path / "big.safetensors")]
    assert main(big) == 0, capsys.readouterr().err
    with safe_open(tmp_path / "big.safetensors", "pt") as f:
        assert f.get_tensor("weight").shape == (160, 1024)
