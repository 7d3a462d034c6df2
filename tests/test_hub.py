"""Inits and generators on the Hub: the real ``huggingface_hub`` client, real HTTP, no mocks.

Each test gets a fresh loopback Hub server and an empty cache (the ``hub_server`` fixture).
Inits are predicted by a tiny generator: the default one would make this file several times
slower without testing anything more.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hubserver import LocalHub
from safetensors.torch import load_file, save_file

import graphs
import hyperinit
from hyperinit import publish
from hyperinit.cli import main
from hyperinit.errors import CheckpointError, OutputPathError
from hyperinit.safetensors_io import read_state

RESNET = "torchvision:resnet18"  # always with num_classes=10
GPT2 = {"n_layer": 1, "n_embd": 64, "n_head": 2}  # options of hf:gpt2


def _tiny_generator(seed: int) -> hyperinit.GraphHyperNetwork:
    torch.manual_seed(seed)
    config = hyperinit.GHNConfig(hidden=16, layers=1, heads=2, rank=4, features=8)
    return hyperinit.GraphHyperNetwork(config).eval()


@pytest.fixture(scope="module")
def tiny() -> hyperinit.GraphHyperNetwork:
    return _tiny_generator(0)


def _resnet(num_classes: int = 10, name: str = RESNET) -> torch.nn.Module:
    """The architecture on ``meta``: shapes and dtypes without memory."""
    return graphs.resolve(name, num_classes=num_classes).build()


def _equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(
        a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]) for k in a)


def _read(folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor of an init folder (single file or shards), tied aliases restored."""
    return read_state(sorted(folder.glob("*.safetensors")))


def test_generator_round_trip_by_branch_tag_and_commit(hub_server: LocalHub) -> None:
    first, second = _tiny_generator(0), _tiny_generator(1)
    v1 = publish.push_generator(first, "user/ghn")
    hub_server.api.create_tag("user/ghn", tag="v1", revision=v1.oid)
    publish.push_generator(second, "user/ghn", revision="next")  # a new branch, from main
    files = hub_server.api.list_repo_files("user/ghn", revision="next")
    assert {"config.json", "model.safetensors", "README.md"} <= set(files)

    expected = {"v1": first, v1.oid: first, "main": first, "next": second}
    for revision, generator in expected.items():
        loaded = hyperinit.load_generator(f"hub:user/ghn@{revision}")
        assert loaded.config == generator.config
        assert _equal(loaded.state_dict(), generator.state_dict()), revision
    assert hyperinit.load_generator("hub:user/ghn@v1").id == f"hub:user/ghn@{v1.oid}"

    graph = graphs.build(graphs.resolve(RESNET, num_classes=10))
    with torch.no_grad():
        assert _equal(dict(loaded.iter_tensors(graph)),
                      dict(second.iter_tensors(graph)))


def test_init_round_trip_single_file(hub_server: LocalHub, tmp_path: Path) -> None:
    """Predicted by a Hub generator, pushed, pulled and loaded: the same bytes throughout."""
    ghn = publish.push_generator(_tiny_generator(0), "user/ghn")
    generator = f"hub:user/ghn@{ghn.oid}"
    info = publish.push_init(RESNET, "user/resnet18-init", generator, seed=3, noise=0.2,
                         num_classes=10)
    assert info.commit_url.startswith(hub_server.url)
    assert set(hub_server.api.list_repo_files("user/resnet18-init")) == {
        ".gitattributes", "README.md", "config.json", "model.safetensors"}

    local = hyperinit.save_init(RESNET, tmp_path / "local.safetensors", generator, seed=3,
                                noise=0.2, num_classes=10)[0]
    pulled = hyperinit.pull_init("user/resnet18-init", out=tmp_path / "pulled")
    assert (pulled / "model.safetensors").read_bytes() == local.read_bytes()
    config = json.loads((pulled / "config.json").read_text())["hyperinit"]
    assert config["arch"] == {"source": "torchvision", "name": "resnet18",
                              "kwargs": {"num_classes": 10}}
    assert (config["generator"], config["seed"], config["noise"]) == (generator, 3, 0.2)
    assert config["arch_hash"] == graphs.build(graphs.resolve(config["arch"])).arch_hash
    card = (pulled / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: hyperinit\n") and config["arch_hash"] in card

    reference = load_file(local)
    model = hyperinit.from_hub("user/resnet18-init")
    assert _equal(model.state_dict(), reference)
    assert torch.isfinite(model(torch.randn(2, 3, 64, 64))).all()
    assert _equal(hyperinit.from_hub(str(pulled)).state_dict(), reference)

    publish.push_init(RESNET, "user/resnet18-init", generator, seed=4, num_classes=10)
    assert not _equal(hyperinit.from_hub("user/resnet18-init").state_dict(), reference)
    old = hyperinit.from_hub("user/resnet18-init", revision=info.oid)
    assert _equal(old.state_dict(), reference)


def test_sharded_transformers_init_on_a_branch(hub_server: LocalHub, tmp_path: Path,
                                               tiny: hyperinit.GraphHyperNetwork) -> None:
    publish.push_init("hf:gpt2", "user/gpt2-init", tiny, revision="tiny", max_shard_size=200_000,
                  **GPT2)
    files = hub_server.api.list_repo_files("user/gpt2-init", revision="tiny")
    assert "model.safetensors.index.json" in files
    assert sum(f.startswith("model-0") for f in files) > 1
    assert "model.safetensors" not in hub_server.api.list_repo_files("user/gpt2-init")

    pulled = hyperinit.pull_init("user/gpt2-init", revision="tiny", out=tmp_path / "pulled")
    reference = _read(pulled)
    model = hyperinit.from_hub("user/gpt2-init", revision="tiny")
    assert type(model).__name__ == "GPT2LMHeadModel"
    assert _equal(model.state_dict(), reference)
    assert model.lm_head.weight is model.transformer.wte.weight  # tied again after loading
    assert torch.isfinite(model(torch.randint(0, 100, (2, 8))).logits).all()

    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(pulled)  # the full transformers config is stored
    assert (config.model_type, config.n_layer, config.n_embd) == ("gpt2", 1, 64)

    # one file pushed to the same branch: the old shards and index go in that commit
    publish.push_init("hf:gpt2", "user/gpt2-init", tiny, revision="tiny", **GPT2)
    files = hub_server.api.list_repo_files("user/gpt2-init", revision="tiny")
    assert [f for f in files if "safetensors" in f] == ["model.safetensors"]
    assert _equal(hyperinit.from_hub("user/gpt2-init", revision="tiny").state_dict(), reference)


def test_offline_mode_loads_from_the_cache(hub_server: LocalHub, tmp_path: Path,
                                           tiny: hyperinit.GraphHyperNetwork) -> None:
    ghn = publish.push_generator(tiny, "user/ghn")
    info = publish.push_init(RESNET, "user/init", tiny, num_classes=10)
    online = hyperinit.from_hub("user/init").state_dict()
    hyperinit.load_generator("hub:user/ghn")

    hub_server.set_offline()
    hub_server.server.stop()  # nothing may reach the network now
    assert _equal(hyperinit.from_hub("user/init").state_dict(), online)
    assert _equal(hyperinit.from_hub("user/init", revision=info.oid).state_dict(), online)
    assert (hyperinit.pull_init("user/init", out=tmp_path / "out") / "model.safetensors").is_file()
    assert hyperinit.load_generator("hub:user/ghn").id == f"hub:user/ghn@{ghn.oid}"
    with pytest.raises(CheckpointError, match=r"not in the Hub cache.*HF_HUB_OFFLINE=1"):
        hyperinit.from_hub("user/init", revision="never-downloaded")


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_corrupt_safetensors_on_the_hub(hub_server: LocalHub, tmp_path: Path,
                                        damage: str) -> None:
    save_file({"w": torch.randn(64, 64)}, tmp_path / "good.safetensors")
    data = (tmp_path / "good.safetensors").read_bytes()
    bad = data[: len(data) // 2] if damage == "truncated" else b"\x00garbage" * 1000
    hub_server.api.create_repo("user/init")
    hub_server.api.upload_file(path_or_fileobj=bad, path_in_repo="model.safetensors",
                               repo_id="user/init", commit_message=f"{damage} weights")

    out = tmp_path / "pulled" / "init"
    out.parent.mkdir()
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        hyperinit.pull_init("user/init", out=out)
    assert list(out.parent.iterdir()) == []  # not even a staging folder is left behind
    with pytest.raises(CheckpointError, match=r"user/init@[0-9a-f]{40}: model.safetensors"):
        hyperinit.from_hub("user/init")


def test_init_that_does_not_fit_the_model(hub_server: LocalHub, tmp_path: Path,
                                          tiny: hyperinit.GraphHyperNetwork) -> None:
    publish.push_init(RESNET, "user/init", tiny, num_classes=10, dtype="bfloat16")
    model = hyperinit.from_hub("user/init")  # built from config.json, in the init's dtype
    assert model.fc.weight.dtype == torch.bfloat16 and not model.fc.weight.is_meta

    bf16 = torch.bfloat16
    with pytest.raises(CheckpointError, match=r"other shapes.*fc\.weight \(10, 512\) vs "
                                              r"\(100, 512\)"):
        hyperinit.from_hub("user/init", model=_resnet(100).to(bf16))
    with pytest.raises(CheckpointError, match=r"other dtypes.*torch\.bfloat16 vs torch\.float32"):
        hyperinit.from_hub("user/init", model=_resnet())
    with pytest.raises(CheckpointError, match=r"missing from the init \(layer1\.2\."):
        hyperinit.from_hub("user/init", model=_resnet(name="torchvision:resnet34").to(bf16))

    real = _resnet().to_empty(device="cpu").to(bf16)
    loaded = hyperinit.from_hub("user/init", model=real)  # a real module is filled in place
    assert loaded is real and torch.equal(real.fc.weight, model.fc.weight)

    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("mine")
    with pytest.raises(OutputPathError, match="already exists"):
        hyperinit.pull_init("user/init", out=taken)
    assert [p.name for p in taken.iterdir()] == ["keep.txt"]


def test_missing_repo_revision_and_bad_references(hub_server: LocalHub,
                                                  tiny: hyperinit.GraphHyperNetwork) -> None:
    with pytest.raises(CheckpointError, match="no model repo 'user/nope'"):
        hyperinit.from_hub("user/nope")
    publish.push_init(RESNET, "user/init", tiny, num_classes=10)
    with pytest.raises(CheckpointError, match="has no revision 'v9'"):
        hyperinit.pull_init("user/init", revision="v9")
    with pytest.raises(CheckpointError, match="has no revision 'v9'"):
        hyperinit.load_generator("hub:user/init@v9")
    with pytest.raises(CheckpointError, match="not a valid generator config"):
        hyperinit.load_generator("hub:user/init")  # an init is not a generator
    with pytest.raises(CheckpointError, match="not a Hub reference"):
        hyperinit.load_generator("hub:no-owner@main")
    hub_server.api.create_repo("user/empty")
    with pytest.raises(CheckpointError, match="neither model.safetensors nor"):
        hyperinit.from_hub("user/empty")


def test_from_hub_never_imports_what_a_repo_names(hub_server: LocalHub, tmp_path: Path) -> None:
    save_file({"w": torch.zeros(2)}, tmp_path / "model.safetensors")
    arch = {"source": "python", "name": "os:system", "kwargs": {"command": "touch pwned"}}
    (tmp_path / "config.json").write_text(json.dumps({"hyperinit": {"arch": arch}}))
    hub_server.api.create_repo("user/evil")
    hub_server.api.upload_folder(repo_id="user/evil", folder_path=tmp_path)
    with pytest.raises(CheckpointError, match="never imports"):
        hyperinit.from_hub("user/evil")


def test_writes_need_the_token_when_the_hub_asks(hub_server: LocalHub,
                                                 tiny: hyperinit.GraphHyperNetwork) -> None:
    hub_server.server.token = "s3cret"
    with pytest.raises(PermissionError, match=r"HTTP 401.*token"):
        publish.push_init(RESNET, "user/init", tiny, num_classes=10)
    with pytest.raises(PermissionError, match="HTTP 401"):
        publish.push_generator("untrained", "user/ghn", token="wrong")
    publish.push_init(RESNET, "user/init", tiny, num_classes=10, token="s3cret")
    publish.push_generator("untrained", "user/ghn", token="s3cret", revision="dev")
    assert hyperinit.from_hub("user/init").fc.weight.shape == (10, 512)  # reads stay public
    assert hyperinit.load_generator("hub:user/ghn@dev").config == hyperinit.GHNConfig()


def test_cli_push_and_pull(hub_server: LocalHub, tmp_path: Path,
                           capsys: pytest.CaptureFixture[str]) -> None:
    _tiny_generator(0).save_pretrained(tmp_path / "ghn")
    assert main(["push", "--generator-dir", str(tmp_path / "ghn"), "--repo", "user/ghn"]) == 0
    assert "load it with hub:user/ghn@" in capsys.readouterr().err

    assert main(["push", "hf:gpt2", "--config", json.dumps(GPT2), "--repo", "user/gpt2",
                 "--generator", "hub:user/ghn", "--seed", "2", "--revision", "dev",
                 "--max-shard-size", "200000"]) == 0
    assert capsys.readouterr().out.startswith(f"{hub_server.url}/user/gpt2/commit/")

    out = tmp_path / "pulled"
    assert main(["pull", "user/gpt2", "--revision", "dev", "--out", str(out)]) == 0
    printed = capsys.readouterr()
    assert printed.out.strip() == str(out)
    assert "init of hf:gpt2 by hub:user/ghn@" in printed.err and "(seed 2)" in printed.err
    assert (out / "model.safetensors.index.json").is_file()
    config = json.loads((out / "config.json").read_text())["hyperinit"]
    assert config["arch"]["kwargs"] == GPT2 and config["seed"] == 2
    assert _equal(hyperinit.from_hub(str(out)).state_dict(), _read(out))

    assert main(["pull", "user/gpt2", "--revision", "nope"]) == 2
    assert "has no revision 'nope'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["push", "hf:gpt2", "--generator-dir", str(tmp_path / "ghn"), "--repo", "user/x"])
    assert "either ARCH" in capsys.readouterr().err
