"""Fault injection: damaged cache blobs, a service killed mid-write, reused output folders, a
full disk, a cache folder that cannot be written, and a pathological request beside a small
one.

Each test asserts correct bytes (for the service: the sha256 of the answer is its ETag) or
the documented error, and a healthy service or a clean folder afterwards. A full disk is a
small tmpfs where one can be mounted (``unshare -rm``; those tests start processes and are
marked slow), and otherwise an ENOSPC raised at the write call (:class:`helpers.FullDisk`).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import torch
from helpers import cli_error, full_disk_open, in_tmpfs, needs_mount, sha256
from safetensors.torch import load_file
from serving import (
    RESNET18,
    ROOT,
    Server,
    config,
    gpt2,
    metric,
    running,
    serve_process,
    wait_until,
)

import graphs
import hyperinit
from hyperinit import safetensors_io
from hyperinit.cli import main
from hyperinit.safetensors_io import INDEX_FILE, SINGLE_FILE

RESNET = ["torchvision:resnet18", "--num-classes", "10"]
# With noise, each seed is its own init (a GHN's prediction itself is deterministic).
PREDICT = ["predict", *RESNET, "--generator", "untrained", "--noise", "0.5"]


def predicted(seed: int, tmp_path: Path) -> dict[str, torch.Tensor]:
    path = tmp_path / f"reference-{seed}.safetensors"
    hyperinit.save_init("torchvision:resnet18", path, "untrained", seed=seed, noise=0.5,
                        num_classes=10)
    return load_file(path)


def loaded(folder: Path) -> dict[str, torch.Tensor]:
    """What ``from_hub`` loads from an init folder into a ResNet-18."""
    model = graphs.resolve("torchvision:resnet18", num_classes=10).build()
    return hyperinit.from_hub(str(folder), model=model).state_dict()


def equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ----- reused output folders ---------------------------------------------------------------
def test_a_folder_init_replaces_an_earlier_one_whole(tmp_path: Path, capsys):
    """Sharded, then one file, then sharded again into the same folder: only the latest
    init's files are there each time, and ``from_hub`` loads the latest."""
    out = tmp_path / "stale"
    assert main([*PREDICT, "--seed", "1", "--max-shard-size", "20000000", "--out", str(out)]) == 0
    shards = sorted(p.name for p in out.iterdir())
    assert INDEX_FILE in shards and len(shards) == 4
    assert main([*PREDICT, "--seed", "2", "--out", str(out)]) == 0
    assert sorted(os.listdir(out)) == [SINGLE_FILE]
    seed2 = predicted(2, tmp_path)
    assert equal(loaded(out), seed2) and not equal(seed2, predicted(1, tmp_path))
    assert main([*PREDICT, "--seed", "3", "--max-shard-size", "20000000", "--out", str(out)]) == 0
    assert SINGLE_FILE not in os.listdir(out) and equal(loaded(out), predicted(3, tmp_path))
    capsys.readouterr()
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("reference")) == [
        "stale"]  # no staging or old folder left beside it


def test_a_folder_holding_other_files_is_refused_untouched(tmp_path: Path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    (out / SINGLE_FILE).write_bytes(b"someone else's")
    error = cli_error(capsys, [*PREDICT, "--out", str(out)])
    assert "holds files that are not an init's (notes.txt)" in error
    assert sorted(os.listdir(out)) == [SINGLE_FILE, "notes.txt"]
    assert (out / SINGLE_FILE).read_bytes() == b"someone else's"
    assert os.listdir(tmp_path) == ["mine"]


# ----- full disk -----------------------------------------------------------------------------
@pytest.mark.parametrize("out", ["r.safetensors", "folder"])
def test_full_disk_is_one_line_and_leaves_nothing(out: str, tmp_path: Path, capsys,
                                                  monkeypatch: pytest.MonkeyPatch):
    """ENOSPC at the write call, after 1 MB of a 45 MB init: one file or a folder."""
    monkeypatch.setattr(safetensors_io, "open", full_disk_open(1 << 20), raising=False)
    error = cli_error(capsys, [*PREDICT, "--out", str(tmp_path / out)])
    assert "its file system is full (No space left on device; the init needs 44,765,128 " in error
    assert "free some space or choose another output path" in error
    assert os.listdir(tmp_path) == []
    with pytest.raises(hyperinit.DiskFullError):
        hyperinit.save_init("torchvision:resnet18", tmp_path / out, "untrained")


@needs_mount
@pytest.mark.slow
def test_full_disk_on_a_small_tmpfs_cli(tmp_path: Path):
    """The CLI on a real 4 MB file system, for one file and for a folder."""
    small = tmp_path / "small"
    small.mkdir()
    script = ('"$@" --out "$0/r.safetensors"; one=$?; "$@" --out "$0/folder"; two=$?; '
              'echo "$one $two"; ls -A "$0"')
    command = [*in_tmpfs("size=4m", script), str(small), sys.executable, "-m", "hyperinit.cli",
               *PREDICT]
    run = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert run.stdout.split() == ["2", "2"], run.stdout + run.stderr  # and `ls` found nothing
    errors = [line for line in run.stderr.splitlines() if line.startswith("hyperinit")]
    assert len(errors) == 2 and all("its file system is full" in e for e in errors), run.stderr


# ----- the service's cache ---------------------------------------------------------------
@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running(config(tmp_path_factory.mktemp("faults"))) as server:
        yield server


def post(server: Server | httpx.Client, request: dict) -> httpx.Response:
    """POST an init request; it must answer 200 with bytes whose sha256 is the ETag."""
    client = server if isinstance(server, httpx.Client) else server.client
    response = client.post("/v1/inits", json=request)
    assert response.status_code == 200, response.text
    assert response.headers["etag"] == f'"{sha256(response.content)}"'
    return response


def zero_tail(blob: Path) -> None:
    with open(blob, "r+b") as f:
        f.seek(-4096, os.SEEK_END)
        f.write(bytes(4096))


def damage_header(blob: Path) -> None:
    with open(blob, "r+b") as f:
        f.seek(8)
        f.write(b"#" * 16)


DAMAGE: dict[str, Callable[[Path], None]] = {
    "tail zeroed": zero_tail,
    "truncated": lambda blob: os.truncate(blob, blob.stat().st_size // 2),
    "emptied": lambda blob: os.truncate(blob, 0),
    "header damaged": damage_header,
    "deleted": Path.unlink,
}


def blob_of(server: Server, response: httpx.Response) -> Path:
    return server.service.cache.blob_path(response.headers["etag"].strip('"'))


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_blob_is_generated_again_never_served(server: Server, damage: str):
    request = gpt2(seed=100 + list(DAMAGE).index(damage))
    first = post(server, request)
    DAMAGE[damage](blob_of(server, first))
    damaged = metric(server, "hyperinit_cache_damaged_total")
    again = post(server, request)
    assert again.headers["x-cache"] == "miss" and again.content == first.content
    assert metric(server, "hyperinit_cache_damaged_total") == damaged + 1
    assert blob_of(server, first).read_bytes() == first.content  # repaired on disk
    assert post(server, request).headers["x-cache"] == "hit"


def test_a_damaged_blob_fetched_by_hash_is_not_found_until_generated_again(server: Server):
    first = post(server, gpt2(seed=120))
    zero_tail(blob_of(server, first))
    location = first.headers["content-location"]
    missing = server.client.get(location)
    assert missing.status_code == 404 and missing.json()["error"] == "not_cached"
    assert post(server, gpt2(seed=120)).headers["x-cache"] == "miss"
    assert server.client.get(location).content == first.content



def test_a_settled_blob_is_hashed_once_and_still_caught_when_changed(
        server: Server, monkeypatch: pytest.MonkeyPatch):
    request = gpt2(seed=130)
    first = post(server, request)

    def hashes_of(count: int) -> float:
        before = metric(server, "hyperinit_cache_hashed_total")
        for _ in range(count):
            assert post(server, request).headers["x-cache"] == "hit"
        return metric(server, "hyperinit_cache_hashed_total") - before

    monkeypatch.setattr("serve.cache.SETTLED_S", 60.0)  # just written: never settled
    assert hashes_of(2) == 2
    monkeypatch.setattr("serve.cache.SETTLED_S", 0.05)
    time.sleep(0.1)
    assert hashes_of(3) == 1  # the first hit's check settles it
    time.sleep(0.1)  # past the clock's granularity: the change moves the ctime
    zero_tail(blob_of(server, first))
    again = post(server, request)
    assert again.headers["x-cache"] == "miss" and again.content == first.content
def test_a_restart_drops_damaged_blobs_and_bad_keys(tmp_path: Path):
    settings = config(tmp_path)
    with running(settings) as first_run:
        damaged, intact = post(first_run, gpt2(seed=1)), post(first_run, gpt2(seed=2))
        blob = blob_of(first_run, damaged)
    zero_tail(blob)
    (settings.cache_dir / "keys" / ("0" * 64)).write_bytes(b"\xff\xfe not a hash")
    with running(settings) as restarted:
        assert metric(restarted, "hyperinit_cache_damaged_total") == 1
        assert restarted.client.get("/healthz").json()["cache_entries"] == 1
        assert not blob.exists() and not (settings.cache_dir / "keys" / ("0" * 64)).exists()
        assert post(restarted, gpt2(seed=2)).content == intact.content
        again = post(restarted, gpt2(seed=1))
        assert again.headers["x-cache"] == "miss" and again.content == damaged.content


def partial_writes(folder: Path) -> list[int]:
    """Sizes of the files in ``folder`` (a generation's temp files come and go)."""
    sizes = []
    for path in folder.iterdir():
        try:
            sizes.append(path.stat().st_size)
        except FileNotFoundError:
            continue
    return sizes


@pytest.mark.slow
def test_killed_during_a_large_write_then_restarted_on_the_same_cache(tmp_path: Path):
    """SIGKILL while a 102 MB ResNet-50 init is being written: the restarted service has no
    partial init, generates it again, and answers with the right bytes."""
    cache = tmp_path / "cache"
    options = ("--generator", "untrained", "--cache-dir", str(cache))
    request = {"arch": "torchvision:resnet50", "seed": 3}
    with serve_process(*options) as service, ThreadPoolExecutor(1) as pool:
        pending = pool.submit(service.client.post, "/v1/inits", json=request)
        wait_until(lambda: any(size > 1 << 20 for size in partial_writes(cache / "tmp")))
        service.popen.kill()
        service.popen.wait(30)
        with pytest.raises(httpx.TransportError):
            pending.result()
    assert partial_writes(cache / "tmp") and not list((cache / "blobs").iterdir())
    with serve_process(*options) as restarted:
        assert list((cache / "tmp").iterdir()) == []
        response = post(restarted.client, request)
        assert response.headers["x-cache"] == "miss" and len(response.content) > 100e6
        assert restarted.client.get("/healthz").status_code == 200


# ----- full disk and unwritable cache folders ------------------------------------------------
def test_a_full_cache_disk_answers_507_then_serves_again(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch):
    """ENOSPC at the write call: 507 with Retry-After, nothing kept; with space again, the
    same request is generated and served."""
    settings = config(tmp_path, retry_after_s=4)
    with running(settings) as server:
        monkeypatch.setattr(safetensors_io, "open", full_disk_open(1 << 16), raising=False)
        full = server.client.post("/v1/inits", json=gpt2(seed=1))
        assert full.status_code == 507 and full.json()["error"] == "insufficient_storage"
        assert full.headers["retry-after"] == "4"
        assert os.listdir(settings.cache_dir / "tmp") == []
        assert os.listdir(settings.cache_dir / "blobs") == []
        monkeypatch.undo()
        assert post(server, gpt2(seed=1)).headers["x-cache"] == "miss"
        assert server.client.get("/healthz").json()["cache_entries"] == 1


@needs_mount
@pytest.mark.slow
def test_a_full_cache_disk_on_a_small_tmpfs(tmp_path: Path):
    """The service with its cache on a real 8 MB file system: a 45 MB init gets 507 and
    leaves nothing; a 0.35 MB one is served."""
    small = tmp_path / "small"
    small.mkdir()
    cache = small / "cache"
    options = ("--generator", "untrained", "--cache-dir", str(cache))
    with serve_process(*options, prefix=(*in_tmpfs("size=8m"), str(small))) as service:
        full = service.client.post("/v1/inits", json=RESNET18)
        assert full.status_code == 507 and full.json()["error"] == "insufficient_storage"
        seen = Path(f"/proc/{service.popen.pid}/root") / cache.relative_to("/")  # its mounts
        assert os.listdir(seen / "tmp") == [] and os.listdir(seen / "blobs") == []
        assert post(service.client, gpt2(seed=1)).headers["x-cache"] == "miss"
        assert service.client.get("/healthz").status_code == 200


def test_a_cache_folder_that_cannot_be_written_is_one_line(capsys):
    error = cli_error(capsys, ["serve", "--generator", "untrained", "--cache-dir",
                               "/proc/hyperinit-cache"])
    assert "cache folder /proc/hyperinit-cache is not writable (No such file or directory)" \
        in error


@needs_mount
@pytest.mark.slow
def test_a_read_only_cache_mount_is_one_line(tmp_path: Path):
    read_only = tmp_path / "ro"
    read_only.mkdir()
    command = [*in_tmpfs("ro"), str(read_only), sys.executable, "-m", "hyperinit.cli", "serve",
               "--generator", "untrained", "--cache-dir", str(read_only / "cache")]
    run = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert run.returncode == 2, run.stderr
    assert run.stderr.splitlines() == [
        f"hyperinit serve: error: cache folder {read_only / 'cache'} is not writable (Read-only "
        "file system): give a writable folder as the cache (--cache-dir)"]


# ----- a pathological request beside a small one -------------------------------------------
def test_a_small_request_beside_a_pathological_one_finishes_in_under_2_s(server: Server):
    """A config declaring a million tiny layers is refused by the size check in milliseconds,
    so a small request sent with it, to the one generation slot, is not held behind it."""
    post(server, gpt2(seed=130))  # imports and first builds are not what is timed
    deep = {"arch": "hf:gpt2", "config": {"n_layer": 10**6, "n_embd": 8, "n_head": 2}}
    with ThreadPoolExecutor(2) as pool:
        start = time.monotonic()
        refused = pool.submit(server.client.post, "/v1/inits", json=deep)
        small = pool.submit(post, server, gpt2(seed=131))
        assert small.result().headers["x-cache"] == "miss"
        assert time.monotonic() - start < 2
        assert refused.result().json()["error"] == "too_many_parameters"
        assert time.monotonic() - start < 2
    assert server.client.get("/healthz").json()["generations_in_flight"] == 0
