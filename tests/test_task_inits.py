"""Inits for a task, through every public door: the Python API, ``hyperinit predict`` and
``push --task``, the HTTP service on loopback and the Hub.

The generator is real: a tiny weight-diffusion model trained for 4 steps on the tiny zoo over
three-way CIFAR-10 tasks (``tiny_task_zoo``: seconds), so its descriptor projection has left
zero and the task steers its samples. Files are real safetensors files.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from helpers import cli_error
from hubserver import LocalHub
from safetensors import safe_open
from safetensors.torch import load, load_file
from serving import TINY_GPT2, Server, config, running

import hyperinit
from hyperinit import publish
from hyperinit.cli import main
from hyperinit.diffusion import DiffusionConfig, WeightDiffusion
from serve.schemas import InitRequest
from training.config import TrainConfig
from training.run import train
from training.tasks import Task

ARCH = "python:training.zoo:build_arch"  # a zoo architecture, as zoo records name it
BNRESNET = {"name": "bnresnet-1", "num_classes": 3}
CAT_DOG_SHIP, PLANE_CAR_BIRD = Task.parse("cat,dog,ship"), Task.parse("0,1,2")
CAT_DOG_SHIP_VECTOR = [0, 0, 0, 1, 0, 1, 0, 0, 1, 0]


@pytest.fixture(scope="module")
def task_model(tmp_path_factory: pytest.TempPathFactory, tiny_task_zoo) -> Path:
    """The folder of a tiny task-conditioned diffusion model (task_dim 10), named
    ``tiny-tasks``."""
    run = tmp_path_factory.mktemp("task-model")
    folder = train(TrainConfig(
        generator="diffusion", zoo=tiny_task_zoo[0].out, out=str(run / "run"), steps=4,
        batch_size=4, hidden=16, layers=1, heads=2, graph_layers=1, chunk=16, window=64,
        checkpoint_every=4, device="cpu"))
    return Path(shutil.copytree(folder, run / "tiny-tasks"))


def _init(path: Path, generator, **options) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """``save_init`` of the three-way BatchNorm ResNet: its tensors and metadata."""
    (file,) = hyperinit.save_init(ARCH, path, generator, **{**BNRESNET, **options})
    with safe_open(file, "pt") as f:
        return load_file(file), f.metadata()


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ----- Python API ---------------------------------------------------------------------------
def test_an_init_for_a_task_is_that_tasks_and_says_so(task_model: Path, tmp_path: Path):
    cat_dog_ship, meta = _init(tmp_path / "a.safetensors", task_model, task=CAT_DOG_SHIP)
    assert json.loads(meta["hyperinit.task"]) == {"descriptor": CAT_DOG_SHIP_VECTOR,
                                                  "name": "cifar10-3-5-8"}
    other, other_meta = _init(tmp_path / "b.safetensors", task_model, task=PLANE_CAR_BIRD)
    assert json.loads(other_meta["hyperinit.task"])["name"] == "cifar10-0-1-2"
    untasked, plain_meta = _init(tmp_path / "c.safetensors", task_model)
    assert "hyperinit.task" not in plain_meta
    weight = next(name for name, tensor in cat_dog_ship.items() if tensor.ndim > 1)
    assert not torch.equal(cat_dog_ship[weight], other[weight])
    assert not torch.equal(cat_dog_ship[weight], untasked[weight])

    # The descriptor itself (a list or a tensor) is the same task, recorded without a name.
    for descriptor in (CAT_DOG_SHIP_VECTOR, CAT_DOG_SHIP.descriptor()):
        tensors, by_vector = _init(tmp_path / "d.safetensors", task_model, task=descriptor)
        assert _same(tensors, cat_dog_ship)
        assert json.loads(by_vector["hyperinit.task"]) == {"descriptor": CAT_DOG_SHIP_VECTOR}
    # predict_state_dict and predict make the same init as save_init.
    state = hyperinit.predict_state_dict(ARCH, task_model, task=CAT_DOG_SHIP, **BNRESNET)
    assert _same({k: state[k] for k in cat_dog_ship}, cat_dog_ship)
    model = hyperinit.predict(ARCH, task_model, task=CAT_DOG_SHIP, **BNRESNET)
    assert torch.equal(model.state_dict()[weight], cat_dog_ship[weight])


NO_TASK_GENERATORS = {
    "a hypernetwork": ("untrained", r"untrained\S* is a graph hypernetwork, which predicts "
                                    r"from the architecture alone: it takes no task\. Leave "
                                    r"the task out, or use a weight-diffusion generator"),
    "an unconditional diffusion model": (
        WeightDiffusion(DiffusionConfig(chunk=16, hidden=16, layers=1, heads=2, graph_layers=1)),
        r"weight-diffusion generator that is unconditional \(task_dim 0\): it takes no task"),
}


@pytest.mark.parametrize("kind", NO_TASK_GENERATORS)
def test_a_generator_without_tasks_refuses_one_before_writing(kind: str, tmp_path: Path):
    generator, message = NO_TASK_GENERATORS[kind]
    out = tmp_path / "init.safetensors"
    with pytest.raises(hyperinit.TaskError, match=message):
        hyperinit.save_init(ARCH, out, generator, task=CAT_DOG_SHIP, **BNRESNET)
    with pytest.raises(hyperinit.TaskError, match=message):
        hyperinit.predict(ARCH, generator, task=CAT_DOG_SHIP_VECTOR, **BNRESNET)
    assert not out.exists()


BAD_TASKS = {
    "too short": ([1.0, 0.0, 1.0], r"descriptors of 10 values \(shape \(10,\)\), got shape \(3,\)"),
    "a matrix": ([CAT_DOG_SHIP_VECTOR], r"got shape \(1, 10\)"),
    "a number": (3, "a training.tasks.Task .*, a descriptor vector of 10 numbers, or the "
                    "names of its classes, got 3"),
    "an unknown class": ("cat,lion", r"unknown class 'lion' in task 'cat,lion': use class "
                                     r"names \(airplane, .*, truck\) or their indices 0-9"),
    "no class": (" , ", "the task ' , ' names no class: name some of airplane, automobile"),
    "not numbers": (["cat"] * 10, "a task descriptor is a vector of 10 numbers"),
    "not finite": ([float("nan")] * 10, "non-finite"),
}


@pytest.mark.parametrize("name", BAD_TASKS)
def test_a_bad_task_is_refused_saying_what_is_accepted(name: str, task_model: Path):
    task, message = BAD_TASKS[name]
    with pytest.raises(hyperinit.TaskError, match=message):
        hyperinit.predict_state_dict(ARCH, task_model, task=task, **BNRESNET)


def test_a_task_named_by_its_classes_is_that_task(task_model: Path, tmp_path: Path):
    config = json.loads((task_model / "config.json").read_text())
    assert config["task_classes"][3] == "cat" and len(config["task_classes"]) == 10
    reference, _ = _init(tmp_path / "a.safetensors", task_model, task=CAT_DOG_SHIP)
    for text in ("cat,dog,ship", "ship, cat, dog", "3-5-8", "dog,8,3"):
        tensors, meta = _init(tmp_path / "b.safetensors", task_model, task=text)
        assert _same(tensors, reference), text
        assert json.loads(meta["hyperinit.task"]) == {"descriptor": CAT_DOG_SHIP_VECTOR,
                                                      "name": "cat,dog,ship"}


def test_names_need_a_generator_that_names_its_classes(tmp_path: Path):
    unnamed = WeightDiffusion(DiffusionConfig(chunk=16, hidden=16, layers=1, heads=2,
                                              graph_layers=1, task_dim=10))
    with pytest.raises(hyperinit.TaskError, match="does not name the classes of its task "
                                                  r"descriptors \(no task_classes in its "
                                                  r"config.json\), so the task 'cat,dog' cannot "
                                                  "be read: give its descriptor, 10 numbers"):
        hyperinit.predict_state_dict(ARCH, unnamed, task="cat,dog", **BNRESNET)
    for bad in (("a", "b"), tuple("abcdefghia"), (*"abcdefghi", "j,k")):
        with pytest.raises(ValueError, match="task_classes must be 10 distinct names"):
            DiffusionConfig(task_dim=10, task_classes=bad)


# ----- command line -------------------------------------------------------------------------
def test_predict_cli_takes_a_task_by_name_classes_or_indices(task_model: Path, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture):
    reference, _ = _init(tmp_path / "api.safetensors", task_model, task=CAT_DOG_SHIP)
    api_bytes = (tmp_path / "api.safetensors").read_bytes()
    for spec in ("cat,dog,ship", "cifar10-3-5-8", "8,3,5"):
        out = tmp_path / "cli.safetensors"
        code = main(["predict", ARCH, "--config", '{"name": "bnresnet-1"}', "--num-classes", "3",
                     "--generator", str(task_model), "--task", spec, "--out", str(out)])
        assert code == 0 and "task cifar10-3-5-8" in capsys.readouterr().err
        assert out.read_bytes() == api_bytes, spec


def test_predict_cli_refuses_bad_tasks_with_the_accepted_forms(task_model: Path, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture):
    base = ["predict", ARCH, "--config", '{"name": "bnresnet-1"}', "--num-classes", "3",
            "--out", str(tmp_path / "x.safetensors")]
    for bad, why in (("cat,doge", "unknown class 'doge'"), ("cat", "2 to 10 distinct"),
                     ("3,3", "2 to 10 distinct")):
        with pytest.raises(SystemExit) as exit_:
            main([*base, "--generator", str(task_model), "--task", bad])
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and "argument --task" in err and why in err, err
        assert "a task is a task name (cifar10-3-5-8), CIFAR-10 class names (cat,dog,ship)" in err
    err = cli_error(capsys, [*base, "--generator", "untrained", "--task", "cat,dog"])
    assert "graph hypernetwork" in err and "takes no task" in err
    assert not (tmp_path / "x.safetensors").exists()


# ----- Hub ----------------------------------------------------------------------------------
def test_an_init_pushed_for_a_task_records_it(task_model: Path, hub_server: LocalHub,
                                              tmp_path: Path, capsys: pytest.CaptureFixture):
    publish.push_init(ARCH, "user/tasks-init", task_model, task=CAT_DOG_SHIP, **BNRESNET)
    pulled = hyperinit.pull_init("user/tasks-init", out=tmp_path / "pulled")
    _init(tmp_path / "local.safetensors", task_model, task=CAT_DOG_SHIP)
    assert (pulled / "model.safetensors").read_bytes() == \
        (tmp_path / "local.safetensors").read_bytes()
    recorded = json.loads((pulled / "config.json").read_text())["hyperinit"]["task"]
    assert recorded == {"descriptor": CAT_DOG_SHIP_VECTOR, "name": "cifar10-3-5-8"}
    assert "| task | `cifar10-3-5-8` |" in (pulled / "README.md").read_text()

    assert main(["push", ARCH, "--config", '{"name": "bnresnet-1"}', "--num-classes", "3",
                 "--generator", str(task_model), "--task", "0,1,2", "--repo",
                 "user/cli-init"]) == 0
    assert "task cifar10-0-1-2" in capsys.readouterr().err
    cli = hyperinit.pull_init("user/cli-init", out=tmp_path / "cli")
    assert json.loads((cli / "config.json").read_text())["hyperinit"]["task"]["name"] == \
        "cifar10-0-1-2"


# ----- HTTP service -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def server(task_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The service with ``untrained`` (the default) and ``tiny-tasks``."""
    folder = tmp_path_factory.mktemp("task-serve")
    with running(config(folder, generators=("untrained", str(task_model)))) as served:
        yield served


def _gpt2(task: list | str | int | None = None, generator: str = "tiny-tasks") -> dict:
    body = {"arch": "hf:gpt2", "config": TINY_GPT2, "generator": generator}
    return body if task is None else {**body, "task": task}


def test_the_service_makes_an_init_per_task(server: Server):
    first = server.client.post("/v1/inits", json=_gpt2(CAT_DOG_SHIP_VECTOR))
    assert first.status_code == 200 and first.headers["x-cache"] == "miss", first.text
    other = server.client.post("/v1/inits", json=_gpt2(PLANE_CAR_BIRD.descriptor().tolist()))
    plain = server.client.post("/v1/inits", json=_gpt2())
    assert other.headers["x-cache"] == plain.headers["x-cache"] == "miss"
    assert len({first.headers["etag"], other.headers["etag"], plain.headers["etag"]}) == 3
    again = server.client.post("/v1/inits", json=_gpt2([float(v) for v in CAT_DOG_SHIP_VECTOR]))
    assert again.headers["x-cache"] == "hit" and again.content == first.content

    tensors = load(first.content)
    assert not torch.equal(tensors["transformer.h.0.attn.c_attn.weight"],
                           load(other.content)["transformer.h.0.attn.c_attn.weight"])
    # safetensors: an 8-byte little-endian header length, then the JSON header
    header = json.loads(first.content[8:8 + int.from_bytes(first.content[:8], "little")])
    assert json.loads(header["__metadata__"]["hyperinit.task"]) == \
        {"descriptor": CAT_DOG_SHIP_VECTOR}
    keys = {server.service.job(InitRequest(**_gpt2(task))).key
            for task in (CAT_DOG_SHIP_VECTOR, PLANE_CAR_BIRD.descriptor().tolist(), None)}
    assert len(keys) == 3

    named = server.client.post("/v1/inits", json=_gpt2("ship,cat,dog"))
    assert named.status_code == 200, named.text
    assert _same(load(named.content), tensors)  # the same task as its descriptor
    header = json.loads(named.content[8:8 + int.from_bytes(named.content[:8], "little")])
    assert json.loads(header["__metadata__"]["hyperinit.task"]) == \
        {"descriptor": CAT_DOG_SHIP_VECTOR, "name": "cat,dog,ship"}


BAD_TASK_REQUESTS = {
    "task for a hypernetwork": (_gpt2(CAT_DOG_SHIP_VECTOR, "untrained"), "invalid_task",
                                "graph hypernetwork"),
    "wrong length": (_gpt2([1, 0, 1]), "invalid_task", "descriptors of 10 values"),
    "empty": (_gpt2([]), "invalid_request", "task.descriptor: List should have at least 1 item"),
    "not numbers": (_gpt2(["cat"] * 10), "invalid_request",
                    "task.descriptor.0: Input should be a valid"),
    "an unknown class": (_gpt2("cat,lion"), "invalid_task", "unknown class 'lion'"),
    "a number": (_gpt2(3), "invalid_request", "task.descriptor: Input should be a valid list"),
    "an empty name": (_gpt2(""), "invalid_request", "task.names: String should have at least 1"),
    "booleans": (_gpt2([True] * 10), "invalid_request", "task.descriptor.0: Input should be"),
}


@pytest.mark.parametrize("name", BAD_TASK_REQUESTS)
def test_the_service_refuses_bad_tasks_clearly(server: Server, name: str):
    body, error, detail = BAD_TASK_REQUESTS[name]
    response = server.client.post("/v1/inits", json=body)
    assert (response.status_code, response.json()["error"]) == (422, error), response.text
    assert detail in response.json()["detail"]
    if error == "invalid_task":
        assert response.json()["allowed"] == ["tiny-tasks"]
        assert "Generators of this server that take a task: tiny-tasks" in \
            response.json()["detail"]


def test_the_openapi_schema_documents_the_task(server: Server):
    schema = server.client.get("/openapi.json").json()
    task = schema["components"]["schemas"]["InitRequest"]["properties"]["task"]
    assert "descriptor" in task["description"] and "invalid_task" in task["description"]
    assert task["examples"] == [CAT_DOG_SHIP_VECTOR, "cat,dog,ship"]
    assert "task_classes" in task["description"]
    post = schema["paths"]["/v1/inits"]["post"]
    assert "invalid_task" in post["responses"]["422"]["description"]
