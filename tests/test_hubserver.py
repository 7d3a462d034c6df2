"""The loopback Hub server against the real ``huggingface_hub`` client: no mocks, real HTTP.

Each test gets a fresh server and an isolated cache through the ``hub_server`` fixture.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import urllib.request
from pathlib import Path

import hubserver
import huggingface_hub
import pytest
import torch
from hubserver import HubServer, LocalHub
from huggingface_hub import (
    CommitOperationAdd,
    CommitOperationDelete,
    HfApi,
    PyTorchModelHubMixin,
    get_hf_file_metadata,
    hf_hub_download,
    hf_hub_url,
    snapshot_download,
)
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from safetensors.torch import load_file, save_file

hub_server = hubserver.hub_server  # the fixture (importing it by name reads as unused to ruff)
REPO = "user/tiny"
CONFIG = b'{"hidden": 8, "note": "plain text goes inline"}\n'


def _weights(path: Path, seed: int) -> dict[str, torch.Tensor]:
    """Write a small safetensors file (binary, LFS-tracked) and return its tensors."""
    generator = torch.Generator().manual_seed(seed)
    tensors = {"w": torch.randn(16, 8, generator=generator), "b": torch.zeros(16)}
    save_file(tensors, str(path), metadata={"format": "pt"})
    return tensors


def _upload_v1(hub: LocalHub, tmp_path: Path) -> tuple[str, dict[str, torch.Tensor]]:
    """Create ``REPO`` and commit config.json + model.safetensors; returns the commit sha."""
    hub.api.create_repo(REPO)
    folder = tmp_path / "v1"
    folder.mkdir()
    (folder / "config.json").write_bytes(CONFIG)
    tensors = _weights(folder / "model.safetensors", seed=0)
    info = hub.api.upload_folder(repo_id=REPO, folder_path=folder, commit_message="v1")
    return info.oid, tensors


def test_upload_then_download_regular_and_lfs_files(hub_server: LocalHub, tmp_path: Path) -> None:
    sha, tensors = _upload_v1(hub_server, tmp_path)
    hub_server.api.upload_file(path_or_fileobj=b"hello\n", path_in_repo="docs/hello.txt",
                               repo_id=REPO, commit_message="add a nested text file")

    listing = {f.path: f for f in hub_server.api.list_repo_tree(REPO, recursive=True)}
    assert listing["model.safetensors"].lfs is not None  # went through the LFS batch API
    assert listing["model.safetensors"].lfs.sha256 == listing["model.safetensors"].lfs["sha256"]
    assert listing["config.json"].lfs is None  # went inline in the commit
    assert listing["docs"].tree_id  # folders are listed with recursive=True
    assert sorted(hub_server.api.list_repo_files(REPO)) == [
        ".gitattributes", "config.json", "docs/hello.txt", "model.safetensors"]

    config = hf_hub_download(REPO, "config.json")
    weights = hf_hub_download(REPO, "model.safetensors")
    nested = hub_server.api.hf_hub_download(REPO, "docs/hello.txt")
    assert Path(config).read_bytes() == CONFIG
    assert Path(nested).read_bytes() == b"hello\n"
    loaded = load_file(weights)
    assert loaded.keys() == tensors.keys()
    assert all(torch.equal(loaded[k], tensors[k]) for k in tensors)
    assert Path(weights).is_relative_to(hub_server.cache_dir)  # the isolated cache, not ~/.cache

    info = hub_server.api.model_info(REPO, files_metadata=True)
    siblings = {s.rfilename: s for s in info.siblings}
    assert siblings["model.safetensors"].lfs.size == Path(weights).stat().st_size
    assert info.sha != sha  # the nested file made a second commit


def test_old_revisions_by_commit_sha_tag_and_branch(hub_server: LocalHub, tmp_path: Path) -> None:
    api = hub_server.api
    first, tensors_v1 = _upload_v1(hub_server, tmp_path)
    api.create_tag(REPO, tag="v1", revision=first)
    api.create_branch(REPO, branch="frozen", revision="v1")

    _weights(tmp_path / "new.safetensors", seed=1)
    second = api.create_commit(REPO, commit_message="v2", operations=[
        CommitOperationAdd("model.safetensors", tmp_path / "new.safetensors"),
        CommitOperationAdd("config.json", b'{"hidden": 16}\n'),
    ]).oid
    assert second != first

    for revision in (first, "v1", "frozen", "refs/tags/v1"):
        old = load_file(hf_hub_download(REPO, "model.safetensors", revision=revision))
        assert torch.equal(old["w"], tensors_v1["w"]), revision
        assert Path(hf_hub_download(REPO, "config.json", revision=revision)).read_bytes() == CONFIG
        assert api.model_info(REPO, revision=revision).sha == first
    assert Path(hf_hub_download(REPO, "config.json")).read_bytes() == b'{"hidden": 16}\n'
    assert api.model_info(REPO).sha == second

    refs = api.list_repo_refs(REPO)
    assert {b.name: b.target_commit for b in refs.branches} == {"main": second, "frozen": first}
    assert [(t.name, t.ref, t.target_commit) for t in refs.tags] == [("v1", "refs/tags/v1", first)]
    assert [c.commit_id for c in api.list_repo_commits(REPO)][:2] == [second, first]
    assert [c.title for c in api.list_repo_commits(REPO, revision="v1")] == ["v1", "initial commit"]

    snapshot = Path(snapshot_download(REPO, revision="v1"))
    assert snapshot.name == first
    assert sorted(p.name for p in snapshot.iterdir()) == [
        ".gitattributes", "config.json", "model.safetensors"]
    assert (snapshot / "config.json").read_bytes() == CONFIG


def test_resolve_headers_and_range_requests(hub_server: LocalHub, tmp_path: Path) -> None:
    """The headers the client relies on, and ``Range`` (used to resume downloads)."""
    sha, _ = _upload_v1(hub_server, tmp_path)
    data = (tmp_path / "v1" / "model.safetensors").read_bytes()
    meta = get_hf_file_metadata(hf_hub_url(REPO, "model.safetensors", revision="main"))
    assert (meta.commit_hash, meta.size) == (sha, len(data))
    assert meta.etag == hashlib.sha256(data).hexdigest()  # LFS: the etag is the sha256
    assert meta.xet_file_data is None  # Xet is never advertised
    assert get_hf_file_metadata(hf_hub_url(REPO, "config.json")).size == len(CONFIG)

    no_proxy = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(hf_hub_url(REPO, "model.safetensors"),
                                     headers={"Range": "bytes=8-15"})
    with no_proxy.open(request) as response:
        assert response.status == 206
        assert response.headers["Content-Range"] == f"bytes 8-15/{len(data)}"
        assert response.read() == data[8:16]


def test_missing_repo_file_and_revision_raise_specific_errors(hub_server: LocalHub,
                                                              tmp_path: Path) -> None:
    _upload_v1(hub_server, tmp_path)
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("user/nope", "config.json")
    with pytest.raises(RepositoryNotFoundError):
        hub_server.api.model_info("user/nope")
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(REPO, "missing.bin")
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(REPO, "config.json", revision="no-such-branch")
    with pytest.raises(RevisionNotFoundError):
        hub_server.api.model_info(REPO, revision="0" * 40)
    with pytest.raises(EntryNotFoundError):
        hub_server.api.delete_file("missing.txt", repo_id=REPO)
    assert not hub_server.api.file_exists(REPO, "missing.bin")
    assert hub_server.api.file_exists(REPO, "model.safetensors")
    assert not hub_server.api.revision_exists(REPO, "nope")


def test_offline_mode_reads_the_cache(hub_server: LocalHub, tmp_path: Path) -> None:
    sha, _ = _upload_v1(hub_server, tmp_path)
    online = hf_hub_download(REPO, "model.safetensors")
    snapshot = snapshot_download(REPO)

    assert hf_hub_download(REPO, "model.safetensors", local_files_only=True) == online
    hub_server.set_offline()
    hub_server.server.stop()  # nothing may reach the network now
    assert hf_hub_download(REPO, "model.safetensors") == online
    assert hf_hub_download(REPO, "config.json", revision=sha) == str(Path(snapshot) / "config.json")
    assert snapshot_download(REPO) == snapshot
    with pytest.raises(LocalEntryNotFoundError):
        hf_hub_download(REPO, "not-cached.txt")


def test_bearer_token_guards_writes_only(hub_server: LocalHub, tmp_path: Path) -> None:
    _upload_v1(hub_server, tmp_path)
    hub_server.server.token = "s3cret"
    anonymous = HfApi(endpoint=hub_server.url, token=False)
    wrong = HfApi(endpoint=hub_server.url, token="wrong")
    owner = HfApi(endpoint=hub_server.url, token="s3cret")

    for api in (anonymous, wrong):
        with pytest.raises(HfHubHTTPError) as err:
            api.create_repo("user/other")
        assert err.value.response.status_code == 401
        with pytest.raises(HfHubHTTPError) as err:
            api.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id=REPO)
        assert err.value.response.status_code == 401
    assert anonymous.model_info(REPO).sha  # reads stay public
    assert Path(hf_hub_download(REPO, "config.json", token=False)).read_bytes() == CONFIG

    owner.create_repo("user/other")
    _weights(tmp_path / "w.safetensors", seed=2)
    owner.upload_file(path_or_fileobj=tmp_path / "w.safetensors", path_in_repo="w.safetensors",
                      repo_id="user/other")
    assert "w.safetensors" in owner.list_repo_files("user/other")


def test_dataset_repos_and_module_level_functions(hub_server: LocalHub) -> None:
    """``huggingface_hub.create_repo`` & co use an HfApi made at import: the fixture moves it."""
    url = huggingface_hub.create_repo("user/data", repo_type="dataset")
    assert url.repo_type == "dataset" and url.startswith(hub_server.url)
    huggingface_hub.upload_file(path_or_fileobj=b"a,b\n1,2\n", path_in_repo="train.csv",
                                repo_id="user/data", repo_type="dataset")
    path = hf_hub_download("user/data", "train.csv", repo_type="dataset")
    assert Path(path).read_bytes() == b"a,b\n1,2\n"
    assert huggingface_hub.dataset_info("user/data").sha
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("user/data", "train.csv")  # same id, but no such *model* repo


def test_subprocesses_inherit_the_endpoint_and_cache(hub_server: LocalHub) -> None:
    """A fresh interpreter (e.g. the CLI) is configured by the env vars the fixture sets."""
    hub_server.api.create_repo(REPO)
    script = """if True:
        from huggingface_hub import HfApi, hf_hub_download
        HfApi().upload_file(path_or_fileobj=b"\\0bin\\0", path_in_repo="x.dat", repo_id="user/tiny")
        print(hf_hub_download("user/tiny", "x.dat"))
    """
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True)
    path = Path(out.stdout.strip().splitlines()[-1])
    assert path.read_bytes() == b"\0bin\0" and path.is_relative_to(hub_server.cache_dir)
    [info] = hub_server.api.get_paths_info(REPO, ["x.dat"])
    assert info.lfs is not None  # binary content goes to LFS even without a .gitattributes rule


def test_create_repo_conflict_unchanged_files_and_deletes(hub_server: LocalHub,
                                                          tmp_path: Path) -> None:
    api = hub_server.api
    sha, _ = _upload_v1(hub_server, tmp_path)
    with pytest.raises(HfHubHTTPError) as err:
        api.create_repo(REPO)
    assert err.value.response.status_code == 409
    assert api.create_repo(REPO, exist_ok=True).repo_id == REPO

    # same bytes again: preupload reports the remote oids, so the client makes no commit
    again = api.upload_file(path_or_fileobj=CONFIG, path_in_repo="config.json", repo_id=REPO)
    assert again.oid == sha

    api.create_commit(REPO, commit_message="rm", operations=[CommitOperationDelete("config.json")])
    assert "config.json" not in api.list_repo_files(REPO)
    assert "config.json" in api.list_repo_files(REPO, revision=sha)
    api.delete_repo(REPO)
    assert not api.repo_exists(REPO)


def test_store_survives_a_server_restart(tmp_path: Path) -> None:
    with HubServer(tmp_path / "store") as server:
        HfApi(endpoint=server.url).create_repo("user/kept")
    with HubServer(tmp_path / "store") as server:
        assert HfApi(endpoint=server.url).repo_exists("user/kept")


class TinyNet(torch.nn.Module, PyTorchModelHubMixin):
    def __init__(self, width: int = 4) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(width, width)


def test_hub_mixin_push_and_from_pretrained(hub_server: LocalHub) -> None:
    """``push_to_hub`` writes a model card (README.md, validated by the server) and safetensors."""
    net = TinyNet(width=3)
    net.push_to_hub("user/tinynet")
    assert {"README.md", "config.json", "model.safetensors"} <= set(
        hub_server.api.list_repo_files("user/tinynet"))
    loaded = TinyNet.from_pretrained("user/tinynet")
    assert torch.equal(loaded.layer.weight, net.layer.weight)
