"""The Hugging Face Hub as a transport: download and publish generators and inits by revision.

Two kinds of model repos:

* a **generator** repo: a checkpoint folder as ``Generator.save_pretrained`` writes it
  (``config.json``, ``model.safetensors``, the kind's extra files, ``README.md``).
  :func:`download_generator` fetches one (``hyperinit.load_generator("hub:OWNER/NAME@REV")``
  loads it) and ``hyperinit.push_generator`` publishes one through :func:`publish_folder`;
* an **init** repo: predicted parameters as ``model.safetensors`` (or shards plus
  ``model.safetensors.index.json``), a ``config.json`` whose ``hyperinit`` section names the
  architecture, generator, seed and noise (plus, for ``hf:`` specs, the full ``transformers``
  config), and a model card. ``hyperinit.push_init`` publishes one, :func:`pull_init`
  downloads it and :func:`from_hub` loads it into a model.

This module knows files and revisions, not generators or predictions, so every other
module may use it. A revision is a branch, a tag or a commit sha (default ``main``); pushes
go to a branch, created from ``main`` if it does not exist. Everything goes through
``huggingface_hub``, so ``HF_ENDPOINT``, ``HF_TOKEN``, the cache and ``HF_HUB_OFFLINE=1``
behave as usual. Nothing downloaded is unpickled and no remote code runs: architectures are
rebuilt from registry names, never from imports a repo asks for.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from huggingface_hub import CommitInfo, HfApi, constants, snapshot_download
from huggingface_hub.errors import (
    HfHubHTTPError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from safetensors import SafetensorError, safe_open
from torch import nn

import graphs

from .checkpoint import CARD_FILE, CONFIG_FILE
from .errors import CheckpointError, OutputPathError
from .safetensors_io import INDEX_FILE, SINGLE_FILE, check_writable, read_state
from .target import parse_dtype

HUB_PREFIX = "hub:"
GENERATOR_FILES = ["*.json", "*.safetensors", CARD_FILE]  # any kind's config and extras
INIT_FILES = ["*.safetensors", INDEX_FILE, CONFIG_FILE, CARD_FILE]


# ----- references and transport ---------------------------------------------------------
def parse_ref(ref: str) -> tuple[str, str | None]:
    """``hub:owner/name@rev`` -> ``("owner/name", "rev")``; the revision is optional."""
    repo_id, sep, revision = ref.removeprefix(HUB_PREFIX).partition("@")
    if not ref.startswith(HUB_PREFIX) or repo_id.count("/") != 1 or (sep and not revision):
        raise CheckpointError(f"{ref!r} is not a Hub reference: write hub:OWNER/NAME or "
                              "hub:OWNER/NAME@REVISION (a branch, tag or commit sha)")
    return repo_id, revision or None


def download_generator(repo_id: str, revision: str | None = None,
                       token: str | None = None) -> tuple[Path, str]:
    """The cache folder of a generator repo at ``revision``, and its commit sha.

    The files come through the Hub cache, so a revision seen once also loads offline; the
    sha pins the exact weights in the metadata of inits predicted with them.
    """
    folder = _snapshot(repo_id, revision, token, GENERATOR_FILES)
    return folder, folder.name  # snapshot folders are named by commit sha


def prepare_repo(repo_id: str, revision: str | None = None, token: str | None = None,
                 private: bool | None = None) -> str:
    """Create the model repo and the branch ``revision`` (from ``main``) if missing, so a
    push fails on access before any work; returns the full repo id."""
    api = HfApi(token=token)
    with _hub_errors(repo_id, revision):
        repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
        if revision is not None:
            api.create_branch(repo_id, branch=revision, exist_ok=True)
    return repo_id


def publish_folder(folder: Path, repo_id: str, *, revision: str | None = None,
                   token: str | None = None, commit_message: str,
                   delete_patterns: list[str] | None = None) -> CommitInfo:
    """Upload ``folder`` to a prepared repo (:func:`prepare_repo`) in one commit, removing
    files of ``delete_patterns`` it does not hold. Returns the commit (``.oid``,
    ``.commit_url``)."""
    with _hub_errors(repo_id, revision):
        return HfApi(token=token).upload_folder(
            repo_id=repo_id, folder_path=folder, revision=revision,
            commit_message=commit_message, delete_patterns=delete_patterns)


# ----- inits ----------------------------------------------------------------------------
def pull_init(repo_id: str, revision: str | None = None, out: str | os.PathLike | None = None,
              token: str | None = None) -> Path:
    """Download an init (safetensors, index, ``config.json``, card) and check it is complete.

    Returns the snapshot folder in the Hub cache (read-only: its files are links into the
    cache) or, with ``out``, the folder ``out``, which appears all at once, only after every
    file was checked.

    Raises:
        CheckpointError: the repo or revision does not exist, or a file is truncated or
            corrupt (then ``out`` is not created).
        OutputPathError: ``out`` exists and is not an empty folder, or its parent is missing.
    """
    folder = _snapshot(repo_id, revision, token, INIT_FILES)
    files = _init_files(folder, _where(repo_id, folder))
    if out is None:
        return folder
    extras = [folder / name for name in (INDEX_FILE, CONFIG_FILE, CARD_FILE)]
    return _copy_new_folder([*files, *(p for p in extras if p.is_file())], Path(out))


def from_hub(repo_id: str, model: nn.Module | None = None, *, revision: str | None = None,
             strict: bool = True, token: str | None = None,
             max_params: int | None = graphs.DEFAULT_MAX_PARAMS) -> nn.Module:
    """Load an init from the Hub (or a folder :func:`pull_init` wrote) into a model.

    Args:
        repo_id: ``"owner/name"``, or a local folder.
        model: the module to fill; by default it is built from the architecture stored in
            ``config.json``, on CPU, in the init's dtype. A module with parameters on ``meta``
            gets the loaded tensors; a real one is filled in place. Tied parameters stay tied.
        revision: a branch, tag or commit sha (default ``main``).
        strict: whether keys missing from the init or absent from the model are errors
            (shapes and dtypes must always match).
        max_params: the largest architecture ``config.json`` may describe when the model is
            built from it, checked before anything is built (``graphs.check_size``, the
            service's check); None for no limit.

    Raises:
        CheckpointError: the repo or revision does not exist, a file is truncated or
            corrupt, or the init does not fit the model (the first mismatches are listed).
        ArchitectureTooLargeError: ``config.json`` describes more than ``max_params``
            parameters (or more modules than ``graphs.size.MAX_MODULES``).
    """
    if Path(repo_id).is_dir():
        folder, where = Path(repo_id), repo_id
    else:
        folder = _snapshot(repo_id, revision, token, INIT_FILES)
        where = _where(repo_id, folder)
    files = _init_files(folder, where)
    if model is None:
        model = _build(folder, where, max_params)
    state = read_state(files)
    _check_fits(model, state, strict, where)
    _load(model, state, strict)
    return model


def _build(folder: Path, where: str, max_params: int | None) -> nn.Module:
    """The model ``config.json`` names, rebuilt from registries (never from a repo's import),
    once its size is known to be within ``max_params``."""
    try:
        info = json.loads((folder / CONFIG_FILE).read_text())["hyperinit"]
        arch = dict(info["arch"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise CheckpointError(
            f"{where} has no {CONFIG_FILE} with a 'hyperinit' section, so its architecture is "
            "unknown: pass the model to load into (model=...)") from err
    if arch.get("source") == "python":
        raise CheckpointError(
            f"{where} was made for {arch.get('name')!r}, a user's own class, which from_hub "
            "never imports: build that model yourself and pass it (model=...)")
    if arch.get("source") == "hf":  # the full config pushed with the init, not local defaults
        arch["name"] = str((folder / CONFIG_FILE).absolute())  # an explicit path
    spec = graphs.resolve(arch)
    if max_params is not None:
        try:
            graphs.check_size(spec, max_params)
        except graphs.ArchitectureTooLargeError as err:
            raise graphs.ArchitectureTooLargeError(
                f"{where}: {err}; pass max_params=None to build it anyway, or the model to "
                "load into (model=...)") from err
    model = spec.build()
    return model.to(parse_dtype(info["dtype"])) if info.get("dtype") else model


def _check_fits(model: nn.Module, state: dict[str, torch.Tensor], strict: bool,
                where: str) -> None:
    """Raise before touching ``model`` unless every tensor fits it by name, shape and dtype."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unmaterialized = [k for k in missing if expected[k].is_meta]  # would stay without storage
    problems = []
    if strict and missing:
        problems.append(f"{len(missing)} missing from the init ({_first(missing)})")
    elif unmaterialized:
        problems.append(f"{len(unmaterialized)} missing from the init while the model has "
                        f"them on meta ({_first(unmaterialized)})")
    unexpected = [k for k in state if k not in expected]
    if strict and unexpected:
        problems.append(f"{len(unexpected)} not in the model ({_first(unexpected)})")
    shared = [k for k in state if k in expected]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(expected[k].shape)}"
              for k in shared if state[k].shape != expected[k].shape]
    if shapes:
        problems.append(f"{len(shapes)} with other shapes, init vs model ({_first(shapes)})")
    dtypes = [f"{k} {state[k].dtype} vs {expected[k].dtype}"
              for k in shared if state[k].dtype != expected[k].dtype]
    if dtypes:
        problems.append(f"{len(dtypes)} with other dtypes, init vs model ({_first(dtypes)}); "
                        "cast the model first, e.g. model.to(torch.bfloat16)")
    if problems:
        raise CheckpointError(
            f"the init {where} does not fit {type(model).__name__}: " + "; ".join(problems)
            + ". Pass the model it was made for, or model=None to build it from config.json")


def _first(items: list[str], n: int = 3) -> str:
    return ", ".join(items[:n]) + (", ..." if len(items) > n else "")


def _load(model: nn.Module, state: dict[str, torch.Tensor], strict: bool) -> None:
    """Load ``state``; meta tensors are replaced by the loaded ones, then ties are restored."""
    current = model.state_dict()
    ties: dict[int, list[str]] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        ties.setdefault(id(param), []).append(name)
    state = OrderedDict(state)
    state._metadata = current._metadata  # module versions, as in state_dict() (MNASNet checks)
    model.load_state_dict(state, strict=strict, assign=any(t.is_meta for t in current.values()))
    for first, *aliases in ties.values():
        for alias in aliases:
            owner, _, leaf = alias.rpartition(".")
            setattr(model.get_submodule(owner), leaf, model.get_parameter(first))


# ----- files and errors -----------------------------------------------------------------
def _init_files(folder: Path, where: str) -> list[Path]:
    """The safetensors files of an init folder, each checked complete (header and data)."""
    index = folder / INDEX_FILE
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
            names = list(dict.fromkeys(weight_map.values()))
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            raise CheckpointError(f"{where}: {INDEX_FILE} is not a valid shard index: {err}") \
                from err
        if not all(isinstance(n, str) and Path(n).name == n for n in names):
            raise CheckpointError(f"{where}: {INDEX_FILE} names files outside its folder")
    elif (folder / SINGLE_FILE).is_file():
        weight_map, names = None, [SINGLE_FILE]
    else:
        raise CheckpointError(f"{where} has neither {SINGLE_FILE} nor {INDEX_FILE}: it is not "
                              "an init (publish one with hyperinit.push_init)")
    found: dict[str, str] = {}
    for name in names:
        if not (folder / name).is_file():
            raise CheckpointError(f"{where}: {INDEX_FILE} lists {name}, which is missing")
        try:
            with safe_open(folder / name, "pt") as f:
                found.update(dict.fromkeys(f.keys(), name))
        except (SafetensorError, OSError) as err:
            raise CheckpointError(
                f"{where}: {name} is not a complete safetensors file ({err}); it is truncated "
                "or corrupt on the Hub: push the init again, or pick another revision") from err
    if weight_map is not None and found != weight_map:
        raise CheckpointError(f"{where}: the shards do not hold the tensors {INDEX_FILE} lists")
    return [folder / name for name in names]


def _copy_new_folder(files: list[Path], out: Path) -> Path:
    """Copy ``files`` into a new folder ``out``, which appears whole or not at all."""
    if out.exists() and not (out.is_dir() and not any(out.iterdir())):
        raise OutputPathError(f"{out} already exists: pull into a new or empty folder")
    check_writable(out.parent)
    staging = out.parent / f".{out.name}.{secrets.token_hex(4)}.tmp"
    staging.mkdir()
    try:
        for file in files:
            shutil.copyfile(file, staging / file.name)  # follows the cache's symlinks
        os.replace(staging, out)  # atomic; replaces an empty folder
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def _where(repo_id: str, snapshot: Path) -> str:
    return f"{repo_id}@{snapshot.name}"  # cache snapshot folders are named by commit sha


def _snapshot(repo_id: str, revision: str | None, token: str | None,
              patterns: list[str]) -> Path:
    """The cache folder with ``patterns`` of ``repo_id`` at ``revision``, downloaded if needed."""
    with _hub_errors(repo_id, revision):
        return Path(snapshot_download(repo_id, revision=revision, token=token,
                                      allow_patterns=patterns))


@contextmanager
def _hub_errors(repo_id: str, revision: str | None) -> Iterator[None]:
    """Turn the Hub client's errors into ones that say what to do."""
    endpoint = constants.ENDPOINT
    try:
        yield
    except RevisionNotFoundError as err:
        raise CheckpointError(
            f"{repo_id} on {endpoint} has no revision {revision!r}: give an existing branch, "
            "tag or commit sha (see HfApi().list_repo_refs)") from err
    except RepositoryNotFoundError as err:
        raise CheckpointError(
            f"there is no model repo {repo_id!r} on {endpoint}: check the name (a private "
            "repo also needs a token)") from err
    except LocalEntryNotFoundError as err:
        raise CheckpointError(
            f"{repo_id}@{revision or 'main'} is not in the Hub cache ({constants.HF_HUB_CACHE}) "
            f"and {endpoint} cannot be reached (offline mode: HF_HUB_OFFLINE="
            f"{int(constants.HF_HUB_OFFLINE)}): download it once while online") from err
    except HfHubHTTPError as err:
        status = err.response.status_code if err.response is not None else None
        if status in (401, 403):
            raise PermissionError(
                f"{endpoint} refused access to {repo_id} (HTTP {status}): pass a token with "
                "write access (token=... or --token, or HF_TOKEN), or log in with "
                "`hf auth login`") from err
        raise
