"""The HTTP service over real HTTP: uvicorn on 127.0.0.1 (a free port) in a thread, httpx clients.

Generation uses the built-in ``untrained`` generator (and a tiny one saved to a folder) on
small architectures (ResNet-18 with 10 classes, a one-layer GPT-2 with a 256-token
vocabulary). Tests that need a generation to
be slow hold it at a gate (an Event checked before ``hyperinit.save_init``) instead of
sleeping, so they are deterministic.
"""

from __future__ import annotations

import hashlib
import json
import socket
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import httpx
import pytest
import torch
from serving import (
    RESNET18,
    TINY_GPT2,
    Server,
    config,
    gpt2,
    metric,
    running,
    serve_process,
    wait_until,
)

import hyperinit
from hyperinit.diffusion import DiffusionConfig, WeightDiffusion
from serve import ServeConfig
from serve.service import InitService


@pytest.fixture(scope="module")
def main(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The server most tests share: ``untrained`` (the default) and two tiny saved generators,
    a hypernetwork and a weight-diffusion model (full attention, as checkpoints from before
    windows: it has a token limit)."""
    folder = tmp_path_factory.mktemp("serve")
    tiny = hyperinit.GHNConfig(hidden=16, layers=1, heads=2, rank=4, features=8)
    hyperinit.GraphHyperNetwork(tiny).save_pretrained(folder / "tiny-ghn")
    WeightDiffusion(DiffusionConfig(chunk=16, hidden=16, layers=1, heads=2, graph_layers=1,
                                    positions=16, window=None, group=1)).save_pretrained(
        folder / "tiny-diffusion")
    generators = ("untrained", str(folder / "tiny-ghn"), str(folder / "tiny-diffusion"))
    with running(config(folder, generators=generators)) as server:
        yield server


@pytest.fixture(scope="module")
def resnet18(main: Server) -> httpx.Response:
    """The first (uncached) ResNet-18 request of the module."""
    response = main.client.post("/v1/inits", json=RESNET18)
    assert response.status_code == 200, response.text
    return response


@pytest.fixture
def gate(monkeypatch: pytest.MonkeyPatch) -> Iterator[threading.Event]:
    """While the returned event is clear, generations wait before they start writing."""
    opened = threading.Event()
    save_init = hyperinit.save_init

    def gated(*args, **kwargs):
        assert opened.wait(60), "the test never opened the gate"
        return save_init(*args, **kwargs)

    monkeypatch.setattr(hyperinit, "save_init", gated)
    yield opened
    opened.set()


# ----- getting an init ------------------------------------------------------------------
def test_init_loads_strictly_into_the_model_and_runs(resnet18: httpx.Response, tmp_path: Path):
    import torchvision
    from safetensors import safe_open
    from safetensors.torch import load

    assert resnet18.headers["content-type"] == "application/octet-stream"
    assert resnet18.headers["etag"] == f'"{hashlib.sha256(resnet18.content).hexdigest()}"'
    assert resnet18.headers["x-cache"] == "miss"
    model = torchvision.models.resnet18(num_classes=10)
    model.load_state_dict(load(resnet18.content), strict=True)
    assert torch.isfinite(model.eval()(torch.randn(2, 3, 32, 32))).all()
    (tmp_path / "init.safetensors").write_bytes(resnet18.content)
    with safe_open(tmp_path / "init.safetensors", "pt") as f:
        meta = f.metadata()
    assert meta["hyperinit.arch_hash"] == resnet18.headers["x-arch-hash"]
    assert meta["hyperinit.generator"] == resnet18.headers["x-generator"] == "untrained@seed0"


def test_identical_request_is_a_cache_hit_with_the_same_bytes(main: Server,
                                                              resnet18: httpx.Response):
    again = main.client.post("/v1/inits", json=RESNET18)
    assert again.status_code == 200
    assert again.headers["x-cache"] == "hit"
    assert again.content == resnet18.content
    assert again.headers["etag"] == resnet18.headers["etag"]


def test_a_generator_switched_to_orth_in_place_is_not_served_from_the_cache(tmp_path: Path):
    """Same folder, same weights, ``orth`` turned on in its config.json: the generator's id
    and the service's cache key change, so inits made without it are not served for it."""
    from serve.metrics import Metrics
    from serve.schemas import InitRequest

    folder = tmp_path / "tiny-ghn"
    tiny = hyperinit.GHNConfig(hidden=16, layers=1, heads=2, rank=4, features=8)
    hyperinit.GraphHyperNetwork(tiny).save_pretrained(folder)
    request = InitRequest(**RESNET18, generator="tiny-ghn")
    keys = []
    for orth in (False, True):
        settings = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**settings, "orth": orth}))
        service = InitService(config(tmp_path, generators=(str(folder),)), Metrics())
        keys.append(service.job(request).key)
        assert service.generators.get("tiny-ghn").id.endswith("+orth") == orth
    assert keys[0] != keys[1]


def test_conditional_and_by_hash_requests(main: Server, resnet18: httpx.Response):
    etag = resnet18.headers["etag"]
    unchanged = main.client.post("/v1/inits", json=RESNET18, headers={"If-None-Match": etag})
    assert unchanged.status_code == 304 and unchanged.content == b""
    assert unchanged.headers["etag"] == etag
    by_hash = main.client.get(resnet18.headers["content-location"])
    assert by_hash.status_code == 200 and by_hash.content == resnet18.content
    assert "immutable" in by_hash.headers["cache-control"]
    cached = main.client.get(resnet18.headers["content-location"],
                             headers={"If-None-Match": f'"other", W/{etag}'})
    assert cached.status_code == 304
    missing = main.client.get(f"/v1/inits/{'0' * 64}")
    assert missing.status_code == 404 and missing.json()["error"] == "not_cached"


def test_transformers_config_object_is_the_same_as_the_spec(main: Server, tmp_path: Path):
    from safetensors.torch import load_model
    from transformers import GPT2Config, GPT2LMHeadModel

    as_spec = main.client.post("/v1/inits", json=gpt2(seed=3))
    assert as_spec.status_code == 200, as_spec.text
    as_object = main.client.post("/v1/inits",
                                 json={"arch": {"model_type": "gpt2", **TINY_GPT2}, "seed": 3,
                                       "noise": 0.1})
    assert as_object.headers["x-cache"] == "hit"
    assert as_object.headers["etag"] == as_spec.headers["etag"]
    model = GPT2LMHeadModel(GPT2Config(**TINY_GPT2))
    blob = tmp_path / "init.safetensors"
    blob.write_bytes(as_object.content)
    load_model(model, blob)  # strict; the tied lm_head.weight is written once
    logits = model(torch.randint(0, 256, (2, 8))).logits
    assert torch.isfinite(logits).all()


def test_hf_names_are_never_read_from_the_servers_working_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A ``gpt2/config.json`` where the server runs changes nothing: ``hf:gpt2`` is the
    registry's GPT-2 (here with a 4x MLP), as its metadata and cache key say."""
    from safetensors.torch import load
    from transformers import GPT2Config

    (tmp_path / "gpt2").mkdir()
    GPT2Config(**TINY_GPT2, n_inner=32).to_json_file(tmp_path / "gpt2" / "config.json")
    monkeypatch.chdir(tmp_path)
    with running(config(tmp_path)) as server:
        response = server.client.post("/v1/inits", json=gpt2(seed=1))
        assert response.status_code == 200, response.text
    assert load(response.content)["transformer.h.0.mlp.c_fc.weight"].shape == (64, 256)


def test_generator_from_a_folder_is_served_by_its_name(main: Server, tmp_path: Path):
    from safetensors.torch import load_model
    from transformers import GPT2Config, GPT2LMHeadModel

    listed = main.client.get("/v1/generators").json()["generators"]
    assert [(g["name"], g["default"]) for g in listed] == [
        ("untrained", True), ("tiny-ghn", False), ("tiny-diffusion", False)]
    assert listed[1]["config"]["hidden"] == 16 and listed[1]["defaults"]["orth"] is False
    response = main.client.post("/v1/inits", json={**gpt2(seed=3), "generator": "tiny-ghn"})
    assert response.status_code == 200, response.text
    assert response.headers["x-generator"].startswith("tiny-ghn@")
    model = GPT2LMHeadModel(GPT2Config(**TINY_GPT2))
    blob = tmp_path / "init.safetensors"
    blob.write_bytes(response.content)
    load_model(model, blob)
    default = main.client.post("/v1/inits", json=gpt2(seed=3))  # the default generator
    assert default.headers["etag"] != response.headers["etag"]


def test_a_bare_server_defaults_to_the_generator_of_the_cli_and_api(tmp_path: Path):
    """No generators named: all shipped ones are served, and the default is
    ``hyperinit.predict``'s (a ghn-*), which makes a ResNet-18, not the diffusion model."""
    from hyperinit.catalog import default_generator

    bare = ServeConfig(cache_dir=tmp_path / "cache")
    assert set(bare.generators) == set(hyperinit.list_generators())
    with running(bare) as server:
        listed = server.client.get("/v1/generators").json()["generators"]
        assert [g["name"] for g in listed if g["default"]] == [default_generator()]
        tasked = next(g for g in listed if g["name"] == "diffusion-resnet-cifar10-tasks")
        assert tasked["config"]["task_classes"][3] == "cat"  # what a request's task may name
        response = server.client.post("/v1/inits", json=RESNET18)
        assert response.status_code == 200, response.text
        assert response.headers["x-generator"].startswith(f"{default_generator()}@")


def test_concurrent_identical_requests_share_one_generation(main: Server,
                                                            gate: threading.Event):
    generated = metric(main, "hyperinit_generation_seconds_count")
    shared = main.service.metrics.cache["shared"]
    with ThreadPoolExecutor(3) as pool:
        futures = [pool.submit(main.client.post, "/v1/inits", json=gpt2(seed=11))
                   for _ in range(3)]
        wait_until(lambda: main.service.metrics.cache["shared"] == shared + 2)
        gate.set()
        responses = [f.result() for f in futures]
    assert [r.status_code for r in responses] == [200] * 3
    assert sorted(r.headers["x-cache"] for r in responses) == ["miss", "shared", "shared"]
    assert len({r.content for r in responses}) == 1
    assert metric(main, "hyperinit_generation_seconds_count") == generated + 1


# ----- limits -----------------------------------------------------------------------------
def test_full_queue_answers_429_and_slow_generation_503(tmp_path: Path, gate: threading.Event):
    busy = config(tmp_path, max_concurrent=1, queue_limit=0, request_timeout_s=1.0,
                  retry_after_s=7)
    with running(busy) as server, ThreadPoolExecutor(1) as pool:
        first = pool.submit(server.client.post, "/v1/inits", json=gpt2(seed=1))
        wait_until(lambda: server.service.in_flight == 1)
        refused = server.client.post("/v1/inits", json=gpt2(seed=2))
        assert refused.status_code == 429
        assert refused.headers["retry-after"] == "7"
        assert refused.json()["error"] == "busy"
        timed_out = first.result()  # the gate is still closed: it cannot finish in 1 s
        assert timed_out.status_code == 503, timed_out.text
        assert timed_out.headers["retry-after"] == "7"
        gate.set()  # the generation goes on in the background and lands in the cache
        wait_until(lambda: server.service.in_flight == 0)
        retried = server.client.post("/v1/inits", json=gpt2(seed=1))
        assert retried.status_code == 200 and retried.headers["x-cache"] == "hit"


def test_the_timeout_covers_resolving_the_request(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch):
    """A request whose resolving is held at a gate gets 503 at the timeout, as a slow
    generation does."""
    from serve import service

    opened, resolve = threading.Event(), service.resolve_arch

    def gated(request):
        assert opened.wait(60), "the test never opened the gate"
        return resolve(request)

    monkeypatch.setattr(service, "resolve_arch", gated)
    slow = config(tmp_path, request_timeout_s=1.0, retry_after_s=3)
    with running(slow) as server:
        try:
            response = server.client.post("/v1/inits", json=gpt2(seed=1), timeout=10)
        finally:
            opened.set()
        assert response.status_code == 503, response.text
        assert response.headers["retry-after"] == "3"
        assert "resolving the request took longer than 1 s" in response.json()["detail"]
        assert server.client.get("/healthz").status_code == 200


def test_tied_weights_count_once_against_max_params(tmp_path: Path):
    """A one-layer GPT-2 of 3.27M parameters whose 3.2M embedding is also its output layer:
    under a 4M limit (counted twice it was refused), and written once, tied in the init."""
    from hyperinit.safetensors_io import read_state

    with running(config(tmp_path, max_params=4_000_000)) as server:
        response = server.client.post("/v1/inits", json={"arch": "hf:gpt2", "config": {
            "n_layer": 1, "n_embd": 64, "n_head": 2, "n_positions": 64}})
        assert response.status_code == 200, response.text
    blob = tmp_path / "init.safetensors"
    blob.write_bytes(response.content)
    state = read_state([blob])
    assert state["lm_head.weight"] is state["transformer.wte.weight"]
    assert len(response.content) < 2 * state["lm_head.weight"].nbytes


def test_bearer_token(tmp_path: Path):
    with running(config(tmp_path, token="s3cret")) as server:
        missing = server.client.get("/v1/generators")
        assert missing.status_code == 401
        assert missing.headers["www-authenticate"] == "Bearer"
        wrong = server.client.get("/v1/generators", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and "invalid_token" in wrong.headers["www-authenticate"]
        good = {"Authorization": "Bearer s3cret"}
        listed = server.client.get("/v1/generators", headers=good)
        assert listed.status_code == 200
        assert listed.json()["generators"][0]["name"] == "untrained"
        assert server.client.post("/v1/inits", json={"arch": "nope:x"}).status_code == 401
        past_auth = server.client.post("/v1/inits", json={"arch": "nope:x"}, headers=good)
        assert past_auth.status_code == 422
        assert server.client.get("/healthz").status_code == 200  # probes need no token


def _chunked(size: int) -> Iterator[bytes]:  # no Content-Length: counted as it arrives
    yield b'{"arch": "' + b"x" * size + b'"}'


BAD_REQUESTS = {
    "malformed JSON": ({"content": b'{"arch": "torchvision:resnet18",'}, 400, "malformed_json"),
    "not an object": ({"json": ["torchvision:resnet18"]}, 422, "invalid_request"),
    "unknown field": ({"json": {**RESNET18, "weights": "DEFAULT"}}, 422, "invalid_request"),
    "negative seed": ({"json": {**RESNET18, "seed": -1}}, 422, "invalid_request"),
    "noise above 1": ({"json": {**RESNET18, "noise": 1.5}}, 422, "invalid_request"),
    "unknown dtype": ({"json": {**RESNET18, "dtype": "int8"}}, 422, "invalid_request"),
    "huge classifier": ({"json": {**RESNET18, "num_classes": 10**9}}, 422, "too_many_parameters"),
    "huge hf config": ({"json": {"arch": "hf:gpt2", "config": {"n_embd": 65536, "n_layer": 24,
                                                               "n_head": 64}}},
                       422, "too_many_parameters"),
    "absurdly deep hf config": ({"json": {"arch": "hf:gpt2", "config": {
        "n_layer": 10**6, "n_embd": 256, "n_head": 4}}}, 422, "too_many_parameters"),
    "unknown arch": ({"json": {"arch": "torchvision:resnet1"}}, 422, "unknown_architecture"),
    "not a spec": ({"json": {"arch": "resnet18"}}, 422, "unknown_architecture"),
    "python spec": ({"json": {"arch": "python:os:system"}}, 422, "architecture_not_allowed"),
    "hf path": ({"json": {"arch": "hf:/etc/config.json"}}, 422, "architecture_not_allowed"),
    "config without model_type": ({"json": {"arch": {"n_layer": 2}}}, 422,
                                  "invalid_architecture"),
    "bad constructor option": ({"json": {**RESNET18, "config": {"no_such_option": 1}}}, 422,
                               "invalid_architecture"),
    "option that loads a file": ({"json": {"arch": "timm:resnet18", "config": {
        "checkpoint_path": "/etc/passwd"}}}, 422, "options_not_allowed"),
    "unknown generator": ({"json": {**RESNET18, "generator": "ghn-huge"}}, 422,
                          "unknown_generator"),
    "too large for the generator": ({"json": {**RESNET18, "generator": "tiny-diffusion"}}, 422,
                                    "too_large_for_generator"),
    "classes as a bool": ({"json": {**RESNET18, "num_classes": True}}, 422, "invalid_request"),
    "seed as a bool": ({"json": {**RESNET18, "seed": True}}, 422, "invalid_request"),
    "noise as a bool": ({"json": {**RESNET18, "noise": True}}, 422, "invalid_request"),
    "Infinity in config": ({"content": b'{"arch": "hf:gpt2", "config": {"n_layer": Infinity}}'},
                           422, "invalid_request"),
    "NaN in a config object": ({"content": b'{"arch": {"model_type": "gpt2", "n_embd": NaN}}'},
                               422, "invalid_request"),
    "not UTF-8": ({"content": b'{"arch": "torchvision:resnet18\xff"}'}, 400, "malformed_json"),
    "body too large": ({"json": {"arch": "x" * 100_000}}, 413, "body_too_large"),
    "chunked body too large": ({"content": partial(_chunked, 100_000)}, 413, "body_too_large"),
}


@pytest.mark.parametrize("name", BAD_REQUESTS)
def test_bad_requests_get_clear_errors(main: Server, name: str):
    kwargs, status, error = BAD_REQUESTS[name]
    if "content" in kwargs:
        kwargs = {**kwargs, "content": kwargs["content"]() if callable(kwargs["content"])
                  else kwargs["content"], "headers": {"Content-Type": "application/json"}}
    response = main.client.post("/v1/inits", **kwargs)
    assert (response.status_code, response.json()["error"]) == (status, error), response.text
    body = response.json()
    if error == "unknown_architecture" and name == "unknown arch":
        assert "resnet18" in body["suggestions"] and "did you mean" in body["detail"]
    if error == "unknown_generator":
        assert body["allowed"] == ["untrained", "tiny-ghn", "tiny-diffusion"]
        assert "tiny-ghn" in body["detail"]
    if error == "too_large_for_generator":
        assert "at most 8192" in body["detail"] and "ghn" in body["detail"]
    if error == "too_many_parameters":
        assert "20,000,000" in body["detail"]
    if name.startswith(("Infinity", "NaN")):
        assert "is inf" in body["detail"] or "is nan" in body["detail"]


def test_still_serves_after_bad_requests(main: Server):
    response = main.client.post("/v1/inits", json=gpt2(seed=5))
    assert response.status_code == 200 and response.headers["x-cache"] == "miss"
    assert main.client.get("/healthz").json()["generations_in_flight"] == 0


# ----- cache --------------------------------------------------------------------------------
def test_lru_eviction_keeps_the_cache_in_its_bound(tmp_path: Path):
    from transformers import GPT2Config, GPT2LMHeadModel

    state = GPT2LMHeadModel(GPT2Config(**TINY_GPT2)).state_dict(keep_vars=True)
    tensors = {id(t): t for t in state.values()}.values()  # tied ones once, as written
    size = 4 * sum(t.numel() for t in tensors)  # one tiny GPT-2 init, less its small header
    small = config(tmp_path, cache_max_bytes=int(2.5 * size))  # room for two, not three
    with running(small) as server:
        hashes = {}
        for seed in (1, 2):
            response = server.client.post("/v1/inits", json=gpt2(seed))
            assert response.status_code == 200, response.text
            hashes[seed] = response.headers["etag"].strip('"')
        assert server.client.get(f"/v1/inits/{hashes[1]}").status_code == 200  # 1 is now newer
        hashes[3] = server.client.post("/v1/inits", json=gpt2(3)).headers["etag"].strip('"')
        assert server.client.get(f"/v1/inits/{hashes[2]}").status_code == 404  # evicted
        health = server.client.get("/healthz").json()
        assert health["cache_entries"] == 2 and health["cache_bytes"] <= small.cache_max_bytes
        assert metric(server, "hyperinit_cache_evictions_total") == 1
    with running(small) as restarted:  # the cache is on disk: a new process finds it
        assert restarted.client.get(f"/v1/inits/{hashes[1]}").status_code == 200
        assert restarted.client.post("/v1/inits", json=gpt2(3)).headers["x-cache"] == "hit"
        assert restarted.client.post("/v1/inits", json=gpt2(2)).headers["x-cache"] == "miss"
    blobs = list((tmp_path / "cache" / "blobs").iterdir())
    assert len(blobs) == 2 and sum(b.stat().st_size for b in blobs) <= small.cache_max_bytes


# ----- command line -------------------------------------------------------------------------
def test_hyperinit_serve_command(tmp_path: Path):
    options = ("--generator", "untrained", "--cache-dir", str(tmp_path), "--token", "t0k",
               "--max-body-bytes", "1K")
    with serve_process(*options) as server:
        assert server.client.get("/v1/generators").status_code == 401
        big = server.client.post("/v1/inits", json={"arch": "x" * 2000},
                                 headers={"Authorization": "Bearer t0k"})
        assert big.status_code == 413 and "1,024" in big.json()["detail"]


# ----- introspection ----------------------------------------------------------------------
def test_metrics_count_requests_cache_and_generation(main: Server, resnet18: httpx.Response):
    text = main.client.get("/metrics").text
    assert main.client.get("/metrics").headers["content-type"].startswith("text/plain")
    assert metric(main, 'hyperinit_http_requests_total{method="POST",route="/v1/inits",'
                        'status="200"}') >= 2
    assert metric(main, 'hyperinit_http_requests_total{method="POST",route="/v1/inits",'
                        'status="422"}') >= 1
    assert metric(main, 'hyperinit_cache_requests_total{outcome="hit"}') >= 1
    assert metric(main, 'hyperinit_cache_requests_total{outcome="miss"}') >= 1
    assert metric(main, "hyperinit_generation_seconds_count") >= 1
    assert metric(main, 'hyperinit_generation_seconds_bucket{le="+Inf"}') >= 1
    assert "# TYPE hyperinit_generations_in_flight gauge" in text
    assert metric(main, "hyperinit_http_requests_in_flight") == 1  # this very request


def test_openapi_schema_documents_the_api(main: Server):
    schema = main.client.get("/openapi.json").json()
    assert {"/v1/inits", "/v1/inits/{content_hash}", "/v1/generators", "/healthz",
            "/metrics"} <= set(schema["paths"])
    post = schema["paths"]["/v1/inits"]["post"]
    assert {"200", "304", "400", "413", "422", "429", "503"} <= set(post["responses"])
    assert "application/octet-stream" in post["responses"]["200"]["content"]
    request = schema["components"]["schemas"]["InitRequest"]
    assert request["examples"] and all(p.get("description") for p in
                                       request["properties"].values())
    assert "ErrorBody" in schema["components"]["schemas"]


def test_schemathesis_fuzz_finds_no_server_errors_or_schema_violations(tmp_path: Path):
    """Schema-driven requests to every operation; ``max_params`` is tiny so nothing generates."""
    schemathesis = pytest.importorskip("schemathesis")
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis.configuration import set_hypothesis_home_dir
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_headers_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    checks = [not_a_server_error, status_code_conformance, content_type_conformance,
              response_headers_conformance, response_schema_conformance]
    set_hypothesis_home_dir(tmp_path / "hypothesis")  # not .hypothesis/ in the repository
    with running(config(tmp_path, max_params=1000)) as server:
        schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
        operations = [result.ok() for result in schema.get_all_operations()]
        assert len(operations) == 5
        for operation in operations:
            @settings(max_examples=12, deadline=None, database=None,
                      phases=[Phase.explicit, Phase.generate],
                      suppress_health_check=list(HealthCheck))
            @given(case=operation.as_strategy())
            def check(case) -> None:
                case.call_and_validate(base_url=server.url, checks=checks)

            check()


@pytest.mark.slow
def test_ray_serve_deployment_answers_like_uvicorn(tmp_path: Path):
    """The Ray Serve wrapper on a one-node local cluster (skipped without ray[serve])."""
    ray = pytest.importorskip("ray")
    from ray import serve as ray_serve
    from safetensors.torch import load
    from transformers import GPT2Config, GPT2LMHeadModel

    from serve.ray_app import build_app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ray.init(num_cpus=2, include_dashboard=False)
    try:
        ray_serve.start(http_options={"host": "127.0.0.1", "port": port})
        ray_serve.run(build_app({"generators": "untrained", "cache_dir": str(tmp_path),
                                 "max_params": "20000000"}), route_prefix="/")
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120) as client:
            response = client.post("/v1/inits", json=gpt2(seed=1))
            assert response.status_code == 200, response.text
            model = GPT2LMHeadModel(GPT2Config(**TINY_GPT2))
            model.load_state_dict(load(response.content), strict=True)
            again = client.post("/v1/inits", json=gpt2(seed=1))
            assert again.headers["x-cache"] == "hit" and again.content == response.content
            refused = client.post("/v1/inits", json={"arch": "python:os:system"})
            assert refused.status_code == 422
        assert (tmp_path / "replica-0" / "blobs").is_dir()
    finally:
        ray_serve.shutdown()
        ray.shutdown()
