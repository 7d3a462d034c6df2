"""Publish to the Hugging Face Hub what hyperinit makes: predicted inits and generators.

Each function makes or loads its files (``hyperinit.save_init``, ``Generator.save_pretrained``)
into a temporary folder and publishes it in one commit through :mod:`hyperinit.hub`, the
transport layer; pulling and loading are in :mod:`hyperinit.hub` itself.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import CommitInfo, ModelCardData
from safetensors import safe_open

import graphs

from . import hub
from .catalog import GeneratorRef, load_generator
from .checkpoint import CARD_FILE, CONFIG_FILE
from .generator import TaskLike
from .predict import save_init
from .safetensors_io import DEFAULT_MAX_SHARD_SIZE, INDEX_FILE
from .target import Arch, parse_dtype


def push_generator(generator: GeneratorRef, repo_id: str, *, revision: str | None = None,
                   token: str | None = None, private: bool | None = None,
                   commit_message: str = "Upload hyperinit generator") -> CommitInfo:
    """Publish a generator to a Hub model repo (created if needed) in one commit.

    Args:
        generator: a loaded generator, a checkpoint folder, a shipped name, or
            ``"hub:OWNER/NAME@REVISION"`` to republish.
        repo_id: ``"owner/name"``.
        revision: the branch to commit to, created from ``main`` if missing (default ``main``).
        token: a Hub token with write access (default: ``HF_TOKEN`` or the stored login).
        private: visibility of a repo created here; an existing repo keeps its own.

    Returns:
        The commit: ``.oid`` is its sha (a revision that never moves), ``.commit_url`` its page.

    Load it back with ``hyperinit.load_generator(f"hub:{repo_id}@{info.oid}")``.
    """
    model = load_generator(generator)
    repo_id = hub.prepare_repo(repo_id, revision, token, private)
    with tempfile.TemporaryDirectory(prefix="hyperinit-push-") as tmp:
        folder = model.save_pretrained(Path(tmp) / "generator")
        return hub.publish_folder(folder, repo_id, revision=revision, token=token,
                                  commit_message=commit_message)


def push_init(arch: Arch, repo_id: str, generator: GeneratorRef = None, *, seed: int = 0,
              noise: float | None = None, num_classes: int | None = None,
              dtype: str | torch.dtype | None = None, task: TaskLike | None = None,
              revision: str | None = None, token: str | None = None,
              private: bool | None = None, commit_message: str | None = None,
              max_shard_size: int = DEFAULT_MAX_SHARD_SIZE, **kwargs: Any) -> CommitInfo:
    """Predict an init and publish it as a Hub model repo (created if needed) in one commit.

    The commit holds what :func:`hyperinit.save_init` writes (``model.safetensors``, or
    shards and ``model.safetensors.index.json`` above ``max_shard_size`` bytes), a
    ``config.json`` and a model card; safetensors files of an earlier push to the same
    branch are removed in that commit. Arguments are those of :func:`hyperinit.save_init`
    and :func:`push_generator`; an init made for a ``task`` records it (descriptor, and
    name if it has one) in ``config.json`` and the card. Returns the commit (``.oid``,
    ``.commit_url``).
    """
    repo_id = hub.prepare_repo(repo_id, revision, token, private)  # fail on auth before work
    with tempfile.TemporaryDirectory(prefix="hyperinit-push-") as tmp:
        folder = Path(tmp) / "init"
        files = save_init(arch, folder, generator, seed=seed, noise=noise,
                          num_classes=num_classes, dtype=dtype, task=task,
                          max_shard_size=max_shard_size, **kwargs)
        with safe_open(files[0], "pt") as f:
            metadata = f.metadata()
        info = {
            "arch": json.loads(metadata["hyperinit.arch"]),
            "arch_hash": metadata["hyperinit.arch_hash"],
            "generator": metadata["hyperinit.generator"],
            "seed": seed,
            "noise": float(metadata["hyperinit.noise"]),
            "dtype": str(parse_dtype(dtype)).removeprefix("torch.") if dtype is not None else None,
            "version": metadata["hyperinit.version"],
        }
        if "hyperinit.task" in metadata:  # inits without a task keep the config they had
            info["task"] = json.loads(metadata["hyperinit.task"])
        config = {**_transformers_config(info["arch"]), "hyperinit": info}
        (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        (folder / CARD_FILE).write_text(_model_card(repo_id, revision, info))
        label = f"{info['arch']['source']}:{info['arch']['name']}"
        for_task = f", task {_task_label(info['task'])}" if "task" in info else ""
        return hub.publish_folder(
            folder, repo_id, revision=revision, token=token,
            commit_message=commit_message or f"Upload init of {label} (seed {seed}{for_task})",
            delete_patterns=["*.safetensors", INDEX_FILE])


def _transformers_config(arch: dict[str, Any]) -> dict[str, Any]:
    """For ``hf:`` specs, the full ``transformers`` config (``AutoConfig`` reads it back)."""
    if arch["source"] != "hf":
        return {}
    model = graphs.resolve(arch).build()  # parameters on meta: costs no memory
    return {**model.config.to_dict(), "architectures": [type(model).__name__]}


def _task_label(task: dict[str, Any]) -> str:
    """A recorded task as people read it: its name, else its descriptor."""
    return task.get("name") or json.dumps(task["descriptor"])


def _model_card(repo_id: str, revision: str | None, info: dict[str, Any]) -> str:
    """README.md: YAML front matter the Hub indexes, then what the init is and how to load it."""
    arch = info["arch"]
    label = f"{arch['source']}:{arch['name']}"
    tags = ["hyperinit", "initialization", f"hyperinit-{arch['source']}"]
    front = ModelCardData(library_name="hyperinit", tags=tags).to_yaml()
    rev = revision or "main"
    task = f"| task | `{_task_label(info['task'])}` |\n" if "task" in info else ""
    return f"""---
{front}
---

# Initial parameters for `{label}`

Untrained parameters predicted by a hyperinit generator: a starting point for training,
not a trained model.

| | |
|---|---|
| architecture | `{json.dumps(arch, sort_keys=True)}` |
| arch hash | `{info['arch_hash']}` |
| generator | `{info['generator']}` |
| seed | {info['seed']} |
| noise | {info['noise']} |
| dtype | {info['dtype'] or "the model's"} |
{task}| revision | `{rev}` |

## Load

```python
import hyperinit

model = hyperinit.from_hub("{repo_id}", revision="{rev}")
```

or download the files with `hyperinit pull {repo_id} --revision {rev} --out init/`.
"""
