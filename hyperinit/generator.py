"""The generator protocol: what every generator of parameters is, and how it is stored.

A generator (:class:`Generator`) turns an architecture graph into its parameter tensors
with :meth:`Generator.iter_tensors`, one signature for every kind: the graph, a seed and,
for kinds conditioned on tasks, the task the init is for (:data:`TaskLike`; the others
refuse one with :class:`~hyperinit.errors.TaskError`). Each kind registers
under a ``kind`` name (:data:`KINDS`, as timm's registry names models); the ``kind`` in a
checkpoint's ``config.json`` says which class reads it, so a folder, a Hub repo, the
service and ``hyperinit.load_generator`` all go through :meth:`Generator.from_pretrained`.

A checkpoint folder (as ``huggingface_hub``'s ``ModelHubMixin`` lays them out) holds:

* ``config.json``: ``kind``, the network's config (its sizes: what the weights need) and,
  under ``defaults``, the checkpoint's prediction defaults (:class:`PredictDefaults`, like
  timm's ``pretrained_cfg``): settings chosen for these weights that build no weight;
* ``model.safetensors``: the weights, loaded strictly (never a pickle);
* the kind's own extra files (the diffusion noise schedule), and a model card.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, ClassVar, Protocol, Self

import torch
from safetensors.torch import save_model
from torch import nn

from graphs import ArchGraph
from graphs.batch import GraphBatch

from .checkpoint import CARD_FILE, CONFIG_FILE, WEIGHTS_FILE, load_weights_strictly
from .encoder import GraphEncoder
from .errors import CheckpointError, TaskError
from .safetensors_io import usual_permissions

# kind -> "module:Class", imported on first use (the diffusion module imports diffusers,
# which takes seconds). A config.json without ``kind`` was written before kinds existed,
# by a graph hypernetwork.
KINDS = {
    "graph-hypernetwork": "hyperinit.ghn:GraphHyperNetwork",
    "weight-diffusion": "hyperinit.diffusion:WeightDiffusion",
}
LEGACY_KIND = "graph-hypernetwork"


@dataclass
class PredictDefaults:
    """A checkpoint's defaults for ``hyperinit.predict``: chosen for its weights, stored
    beside them in config.json, and not part of the network (no weight depends on them).

    ``noise`` is the fraction of each weight's variance drawn at random when a prediction
    names none (chosen per checkpoint on training-pool architectures; its card says how).
    ``orth`` says the weights were trained through ``hyperinit.predict.orthogonalize``, so
    their predictions are orthogonalized after the noise, every weight but the head.
    ``max_numel`` is the largest weight the generator predicts: a weight with more values
    than that gets He init instead (:func:`hyperinit.predict.he_weight`). None: every
    weight is predicted. Predictions for weights larger than nearly all those a generator
    was trained on can train slower than the default init; its card says what was
    measured and how the limit was chosen.
    ``max_gain`` caps how much a layer can amplify its input, in architectures without
    normalization layers: there every predicted weight of two or more dimensions but the
    head is scaled down (never up) until its largest singular value is at most ``max_gain``
    times that of PyTorch's default init of its shape (:func:`hyperinit.predict.cap_gain`).
    Such a network whose layers each amplify a little more than the default's diverges
    under a learning rate the default init trains with; where normalization layers reset
    the scale, the cap only slowed training. None: no cap.
    ``scale_by_depth`` divides every predicted layer scale (a learned per-channel multiplier
    of a residual branch, graph role ``scale``: ConvNeXt's ``layer_scale``) by the square
    root of how many the network has, so its residual branches together add the variance
    one branch would, whatever the depth. A generator trained on shallow networks predicts
    layer scales near 1 (the default init is 1e-6); in ConvNeXt-T's 18 blocks that made SGD
    diverge.
    """

    noise: float = 0.0
    orth: bool = False
    max_numel: int | None = None
    max_gain: float | None = None
    scale_by_depth: bool = False

    def __post_init__(self) -> None:
        if self.max_numel is not None and (
                isinstance(self.max_numel, bool) or not isinstance(self.max_numel, int)
                or self.max_numel < 1):
            raise ValueError(f"max_numel must be a whole number of at least 1, or null for "
                             f"no limit; got {self.max_numel!r}")
        if self.max_gain is not None and (
                isinstance(self.max_gain, bool) or not isinstance(self.max_gain, int | float)
                or not math.isfinite(self.max_gain) or self.max_gain <= 0):
            raise ValueError(f"max_gain must be a number above 0, or null for no cap; got "
                             f"{self.max_gain!r}")
        if not isinstance(self.scale_by_depth, bool):
            raise ValueError(f"scale_by_depth must be true or false; got "
                             f"{self.scale_by_depth!r}")

    def limits(self) -> dict[str, int | float | bool]:
        """The rules on predictions that are set, ``max_numel``, ``max_gain`` and
        ``scale_by_depth``, by name: what an init's metadata and the generator's id record
        of them."""
        rules = (("max_numel", self.max_numel), ("max_gain", self.max_gain),
                 ("scale_by_depth", self.scale_by_depth or None))
        return {key: value for key, value in rules if value is not None}


class Described(Protocol):
    """A task as generators take it: anything with a descriptor (``training.tasks.Task``)."""

    def descriptor(self) -> torch.Tensor: ...


# A task: anything with a descriptor(), the descriptor itself (a 1-D vector of numbers), or,
# for a generator that names its descriptor's classes, the text naming the task's classes.
TaskLike = Described | torch.Tensor | Sequence[float] | str


def class_indices(text: str, classes: Sequence[str]) -> list[int]:
    """The classes ``text`` names, as indices into ``classes``, in the order given: class
    names or indices, separated by commas or dashes (``"cat,dog,ship"``, ``"3,5,8"``,
    ``"3-5-8"``). A ValueError names the first part that is neither."""
    out = []
    for part in (p.strip() for p in text.replace("-", ",").split(",")):
        if not part:
            continue
        if part.isdigit() and int(part) < len(classes):
            out.append(int(part))
        elif part in classes:
            out.append(list(classes).index(part))
        else:
            raise ValueError(f"unknown class {part!r} in task {text!r}: use class names "
                             f"({', '.join(classes)}) or their indices 0-{len(classes) - 1}")
    return out


def register(kind: str, target: str) -> None:
    """Make ``kind`` (a config.json's ``kind``) load with ``target``, ``"module:Class"``."""
    if kind in KINDS and KINDS[kind] != target:
        raise ValueError(f"generator kind {kind!r} is already {KINDS[kind]}")
    KINDS[kind] = target


def generator_class(kind: str) -> type[Generator]:
    """The class registered for ``kind``; :class:`CheckpointError` listing the known ones."""
    if kind not in KINDS:
        raise CheckpointError(f"unknown generator kind {kind!r}: known kinds are "
                              f"{', '.join(KINDS)}")
    module, _, name = KINDS[kind].partition(":")
    return getattr(importlib.import_module(module), name)


class Generator(nn.Module):
    """Base of every generator: a graph encoder, a way to make each parameter tensor of a
    graph, and checkpoint files.

    Subclasses set ``kind`` (their registry name), ``config_class`` (the dataclass of
    their sizes) and ``encoder`` (a :class:`~hyperinit.encoder.GraphEncoder`), and
    implement :meth:`iter_tensors`. ``name_or_path`` says where a loaded generator came
    from; :attr:`id` turns it into the name and revision that inits record.
    """

    kind: ClassVar[str]
    config_class: ClassVar[type]
    encoder: GraphEncoder
    # What the kind is when it takes no task, for the error that refuses one.
    untasked: ClassVar[str] = "a generator that is not conditioned on tasks"

    def __init__(self, config: Any = None, defaults: PredictDefaults | None = None) -> None:
        super().__init__()
        self.config = config if config is not None else self.config_class()
        self.defaults = defaults if defaults is not None else PredictDefaults()
        self.name_or_path = ""

    # ----- making tensors -------------------------------------------------------------
    def embed(self, graphs: Sequence[ArchGraph]) -> list[torch.Tensor]:
        """Node embeddings of the graph encoder, one ``(nodes, hidden)`` tensor per graph."""
        device = next(self.parameters()).device
        batch = GraphBatch.from_graphs(list(graphs)).to(device)
        return list(self.encoder(batch).split([g.num_nodes for g in graphs]))

    def iter_tensors(self, graph: ArchGraph, seed: int = 0, task: TaskLike | None = None,
                     ) -> Iterator[tuple[str, torch.Tensor]]:
        """Yield ``(name, tensor)`` for every parameter of ``graph``, in graph order (tied
        aliases not repeated). ``seed`` fixes whatever randomness the kind has; ``task``
        (None: no task) is the task the init is for, checked by :meth:`task_vector`."""
        raise NotImplementedError

    # ----- tasks ----------------------------------------------------------------------
    @property
    def task_dim(self) -> int:
        """Length of the task descriptors the generator is conditioned on (0: it takes no
        task)."""
        return 0

    @property
    def task_classes(self) -> tuple[str, ...] | None:
        """What each position of the task descriptor stands for, when the generator records
        it (a zoo's class names): then a task may be given as the text naming its classes."""
        return None

    def task_vector(self, task: TaskLike) -> torch.Tensor:
        """``task``'s descriptor as the float32 vector of :attr:`task_dim` values the
        generator is conditioned on: from its ``descriptor()``, the vector itself, or, for a
        generator with :attr:`task_classes`, the text naming its classes (``"cat,dog,ship"``:
        1 at each named class, else 0).

        :class:`TaskError` saying what is accepted for a generator that takes no task, for
        anything but a 1-D sequence of numbers or such a text, for unknown class names, and
        for a descriptor of another size.
        """
        if not self.task_dim:
            raise TaskError(
                f"{self.id} is {self.untasked}: it takes no task. Leave the task out, or use "
                "a weight-diffusion generator trained on a zoo over tasks (task_dim > 0 in its "
                "config.json)")
        if isinstance(task, str):
            return self._named_task(task)
        value = task.descriptor() if hasattr(task, "descriptor") else task
        if isinstance(value, int | float | str):
            raise TaskError(f"a task is a training.tasks.Task (anything with a descriptor()), "
                            f"a descriptor vector of {self.task_dim} numbers, or the names of "
                            f"its classes, got {value!r}")
        try:
            vector = torch.as_tensor(value, dtype=torch.float32).cpu()
        except (TypeError, ValueError, RuntimeError) as err:
            raise TaskError(f"a task descriptor is a vector of {self.task_dim} numbers, got "
                            f"{value!r}") from err
        if vector.shape != (self.task_dim,):
            raise TaskError(f"this generator takes task descriptors of {self.task_dim} values "
                            f"(shape ({self.task_dim},)), got shape {tuple(vector.shape)}")
        if not torch.isfinite(vector).all():
            raise TaskError(f"the task descriptor has non-finite values: {vector.tolist()}")
        return vector

    def _named_task(self, text: str) -> torch.Tensor:
        """The descriptor of the task whose classes ``text`` names (:func:`class_indices`)."""
        if not self.task_classes:
            raise TaskError(f"{self.id} does not name the classes of its task descriptors (no "
                            f"task_classes in its config.json), so the task {text!r} cannot be "
                            f"read: give its descriptor, {self.task_dim} numbers")
        try:
            picked = class_indices(text, self.task_classes)
        except ValueError as err:
            raise TaskError(str(err)) from None
        if not picked:
            raise TaskError(f"the task {text!r} names no class: name some of "
                            f"{', '.join(self.task_classes)}")
        vector = torch.zeros(self.task_dim)
        vector[picked] = 1.0
        return vector

    # ----- identity -------------------------------------------------------------------
    @property
    def id(self) -> str:
        """``name@revision`` for metadata, cache keys and evaluation rows: a folder's name
        and weights hash (:func:`folder_id`), a Hub ``hub:OWNER/NAME@SHA``, or the name it
        was given; ``+orth`` if its predictions are orthogonalized, ``+max_numel=N`` if it
        predicts weights of up to N values only and ``+max_gain=G`` if their gain is capped
        (defaults, not in the weights), so each variant is told apart."""
        path = self.name_or_path
        base = folder_id(path) if path and Path(path).is_dir() else path or IN_MEMORY
        return (base + ("+orth" if self.defaults.orth else "")
                + "".join(f"+{key}={value}" for key, value in self.defaults.limits().items()))

    # ----- files ----------------------------------------------------------------------
    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Write config.json, model.safetensors, the kind's extra files and a model card
        into ``directory`` (created if missing); returns it."""
        folder = Path(directory)
        folder.mkdir(parents=True, exist_ok=True)
        config = {"kind": self.kind, **asdict(self.config), "defaults": asdict(self.defaults)}
        (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        save_model(self, str(folder / WEIGHTS_FILE), metadata={"format": "pt"})
        usual_permissions(folder / WEIGHTS_FILE)
        self.save_extra(folder)
        (folder / CARD_FILE).write_text(self.model_card())
        return folder

    def save_extra(self, folder: Path) -> None:
        """Write the kind's own files beside the weights (none by default)."""

    def load_extra(self, folder: Path) -> None:
        """Read what :meth:`save_extra` wrote (nothing by default)."""

    def model_card(self) -> str:
        """README.md: front matter the Hub indexes, and how to load the generator."""
        from huggingface_hub import ModelCardData  # only for writing: costs no start-up

        front = ModelCardData(library_name="hyperinit", tags=["hyperinit", self.kind]).to_yaml()
        return (f"---\n{front}\n---\n\n# A hyperinit {self.kind} generator\n\n"
                "Predicts initial parameters for neural networks. Load it with\n"
                "`hyperinit.load_generator(FOLDER)` or `hyperinit.load_generator("
                "\"hub:OWNER/NAME@REVISION\")`.\n")

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, *, revision: str | None = None,
                        token: str | None = None, map_location: str = "cpu") -> Self:
        """Load a checkpoint folder or Hub repo (``owner/name`` at ``revision``).

        Called on :class:`Generator`, the config's ``kind`` picks the class; called on a
        kind's class, the config must be of that kind. Weights load strictly from
        safetensors; every problem is a :class:`CheckpointError` naming the checkpoint.
        """
        folder, name = Path(name_or_path), str(name_or_path)
        if not folder.is_dir():
            return cls.from_hub(name, revision=revision, token=token, map_location=map_location)
        kind, config, defaults = read_config(folder)
        if cls is Generator:
            cls = generator_class(kind)
        elif kind != cls.kind:
            raise CheckpointError(f"{name} holds a {kind} generator, not a {cls.kind}: load "
                                  "it with hyperinit.load_generator")
        try:
            model = cls(cls.config_from_dict(config), PredictDefaults(**defaults))
        except (ValueError, TypeError) as err:
            raise CheckpointError(f"{name}: {CONFIG_FILE} is not a valid generator config "
                                  f"(kind {kind}): {err}") from err
        load_weights_strictly(model, folder / WEIGHTS_FILE, name, map_location)
        model.load_extra(folder)
        model.name_or_path = name
        return model.eval()

    @classmethod
    def from_hub(cls, repo_id: str, *, revision: str | None = None, token: str | None = None,
                 map_location: str = "cpu") -> Self:
        """Load a Hub repo at ``revision`` (through the Hub cache, so a revision seen once
        also loads offline), named ``hub:OWNER/NAME@COMMIT_SHA``: inits it predicts record
        the exact weights."""
        from . import hub  # only for Hub repos: local folders import no Hub client

        folder, commit = hub.download_generator(repo_id, revision, token)
        model = cls.from_pretrained(folder, map_location=map_location)
        model.name_or_path = f"{hub.HUB_PREFIX}{repo_id}@{commit}"
        return model

    @classmethod
    def config_from_dict(cls, config: dict[str, Any]) -> Any:
        """The config dataclass from config.json's network fields (kinds with older file
        versions fill in what those lacked)."""
        return cls.config_class(**config)


IN_MEMORY = "in-memory@unsaved"
PREDICT_KEYS = tuple(f.name for f in fields(PredictDefaults))


def read_config(folder: Path) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """``(kind, network config, prediction defaults)`` of a checkpoint folder.

    Files of hyperinit 0.3 and before kept ``noise`` and ``orth`` among the network's
    fields and a graph hypernetwork's had no ``kind``: they are read as the same defaults.
    """
    path = folder / CONFIG_FILE
    if not path.is_file():  # without it the weights would load with default settings
        raise CheckpointError(
            f"{folder} has no {CONFIG_FILE}, so its settings (size, noise, orth) are "
            f"unknown: a generator folder holds {CONFIG_FILE} and {WEIGHTS_FILE}, as "
            "save_pretrained writes them")
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{path} is not readable JSON: {err}") from err
    if not isinstance(config, dict):
        raise CheckpointError(f"{path} is not a JSON object")
    kind = config.pop("kind", LEGACY_KIND)
    defaults = config.pop("defaults", {})
    if not isinstance(defaults, dict):
        raise CheckpointError(f"{path}: defaults must be an object, got {defaults!r}")
    defaults.update({k: config.pop(k) for k in PREDICT_KEYS if k in config})
    return kind, config, defaults


def folder_id(folder: str | os.PathLike) -> str:
    """``name@hash`` of a generator folder: its name and the sha256 of its weights (first
    12 hex digits), so a folder retrained in place gets a new id; ``in-memory@unsaved`` if
    the folder has no weights file."""
    weights = Path(folder) / WEIGHTS_FILE
    if weights.is_file():
        digest = hashlib.sha256(weights.read_bytes()).hexdigest()[:12]
        return f"{Path(folder).name}@{digest}"
    return IN_MEMORY
