"""Training configuration: one plain dataclass, loadable from TOML or YAML, overridable."""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, ClassVar, TypeVar

Config = TypeVar("Config")


@dataclass
class TrainConfig:
    """Everything a generator training run depends on. Defaults fit a CPU smoke run.

    ``generator`` picks what is trained: ``"ghn"`` (the graph hypernetwork, on ``task``'s
    data and sampled architectures) or ``"diffusion"`` (the weight-diffusion model, on the
    checkpoints of the model ``zoo``). Options marked "ghn" or "diffusion" apply to that
    generator only; the rest (optimization, run) apply to both.
    """

    generator: str = "ghn"  # "ghn" or "diffusion"
    task: str = "image"  # ghn: "image" (CIFAR-10 classifiers) or "text" (char-level LMs)
    data: str | None = None  # ghn: dataset path; None: the data folder's (HYPERINIT_DATA)
    train_samples: int | None = None  # ghn: use only N training images (None: all)
    zoo: str | None = None  # diffusion: the model zoo folder (hyperinit zoo build)
    zoo_step: int | None = None  # diffusion: learn checkpoints of this step; None: the last
    out: str = "runs/ghn"
    # architectures (ghn)
    arch_pool: int = 1000  # train on sampler seeds 0..arch_pool-1 (a fixed "1K" set)
    meta_batch: int = 4  # architectures per step
    prebuild_workers: int = 0  # >0: build the whole pool up front in this many processes
    # data
    batch_size: int = 64  # ghn: images or text blocks; diffusion: zoo checkpoints
    block_size: int = 128  # text only
    # optimization (LoGAH's recipe by default)
    steps: int = 1000
    lr: float = 3e-4
    weight_decay: float = 1e-2
    warmup_steps: int = 50
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0
    reg: float = 3e-5  # weight of the sum of predicted tensors' Frobenius norms (GHN-3)
    # ghn: weight of the spread term, the mean over predicted weight matrices of
    # -log(participation ratio / its largest value): it keeps a prediction's energy from
    # collapsing onto a few directions, which makes it train slowly (bench/trainability.py).
    # None: DEFAULT_SPREAD for task="image" (where it was measured), 0 for text and diffusion
    spread: float | None = None
    # ghn: distillation beside the hard labels. ``teacher`` is a model zoo folder (hyperinit
    # zoo build; image task only): its ten-way checkpoints at their last saved step, averaged,
    # give soft targets; ``distill`` weighs T^2 * KL(teacher || prediction) at temperature
    # ``distill_temperature`` = T (Hinton et al.), added to the cross-entropy
    teacher: str | None = None
    distill: float = 0.0
    distill_temperature: float = 4.0
    init: str | None = None  # start from this generator's weights (folder or shipped name)
    # ghn: start only the graph encoder from this generator (folder or shipped name), whatever
    # its decoder: a new decoder then learns from node embeddings that already know
    # architectures. The encoder sizes (hidden, layers, heads) must match.
    encoder_init: str | None = None
    # ghn: train with hyperinit.predict's noise applied to the predictions (noise-aware
    # training); also written to the trained generator's config.json as its default noise.
    # None: no noise in training, and the init's noise (if any) stays in its config
    noise: float | None = None
    # generator size; None: the default of hyperinit.GHNConfig / hyperinit.DiffusionConfig
    hidden: int | None = None
    layers: int | None = None
    heads: int | None = None
    rank: int | None = None  # ghn
    features: int | None = None  # ghn
    chunk: int | None = None  # diffusion: values per weight token
    graph_layers: int | None = None  # diffusion: depth of its graph encoder
    prediction_type: str | None = None  # diffusion: "epsilon" (noise) or "sample" (weights)
    window: int | None = None  # diffusion: positions (groups of tokens) per attention window
    train_windows: int | None = None  # diffusion: windows of a model denoised per step
    ranked_task: bool | None = None  # diffusion over tasks: condition on class ranks too
    class_rows: bool | None = None  # diffusion over tasks: the head's values know their class
    group: int | None = None  # diffusion: tokens merged into one transformer position
    token_hidden: int | None = None  # diffusion with group > 1: width of a token's own vector
    snr_boost: float | None = None  # diffusion: low-noise timesteps weigh up to 1 + this more
    # run
    seed: int = 0
    device: str = "auto"  # "auto", "cpu", "cuda"
    amp: bool = True  # bfloat16 autocast on GPU; ignored on CPU
    checkpoint_every: int = 100
    log_every: int = 10
    resume: bool = True  # continue from OUT/checkpoint.pt if it exists
    max_seconds: float | None = None  # stop (with a checkpoint) after this long; resume later

    # Options of earlier versions, removed because no measured result supported them (what
    # was measured stays in the cards), with the values at which they did nothing (None:
    # any value). Configs and checkpoints of older runs may hold them: see ``drop_removed``.
    removed: ClassVar[dict[str, tuple[Any, ...] | None]] = {
        "lookahead_steps": (0,),  # the loss after N SGD steps from the prediction
        "lookahead_lr": None,  # its step size: no effect at lookahead_steps 0
        "orth": (None, False),  # training through hyperinit.predict.orthogonalize
    }

    def __post_init__(self) -> None:
        if self.generator not in SIZE_OPTIONS:
            raise ValueError(f"generator must be 'ghn' or 'diffusion', got {self.generator!r}")
        if self.generator == "diffusion" and not self.zoo:
            raise ValueError("generator='diffusion' learns from a model zoo: set zoo=FOLDER "
                             "(make one with `hyperinit zoo build`)")
        other = "diffusion" if self.generator == "ghn" else "ghn"
        only_other = SIZE_OPTIONS[other] + (("zoo", "zoo_step") if other == "diffusion" else ())
        wrong = [k for k in only_other if getattr(self, k) is not None]
        if wrong:
            raise ValueError(f"{', '.join(wrong)} only apply to generator={other!r}")
        if self.task not in ("image", "text"):
            raise ValueError(f"task must be 'image' or 'text', got {self.task!r}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {self.device!r}")
        for name in ("arch_pool", "meta_batch", "batch_size", "steps", "checkpoint_every",
                     "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.init and self.encoder_init:
            raise ValueError("init and encoder_init both set where the model starts: give one")
        if self.spread is None:
            self.spread = DEFAULT_SPREAD if (self.generator, self.task) == ("ghn", "image") else 0.0
        for name in ("noise", "encoder_init", "spread", "teacher", "distill"):
            if getattr(self, name) and self.generator != "ghn":
                raise ValueError(f"{name} only applies to generator='ghn'")
        if self.noise is not None and not 0 <= self.noise < 1:
            raise ValueError(f"noise must be at least 0 and below 1 (the fraction of each "
                             f"weight's variance drawn at random), got {self.noise!r}")
        if self.spread < 0:
            raise ValueError(f"spread must be at least 0 (0: no spread term), got {self.spread}")
        self._check_distill()

    def _check_distill(self) -> None:
        if self.distill < 0:
            raise ValueError(f"distill must be at least 0 (0: no distillation), got "
                             f"{self.distill}")
        if self.distill_temperature <= 0:
            raise ValueError(f"distill_temperature must be above 0, got "
                             f"{self.distill_temperature}")
        if bool(self.teacher) != bool(self.distill):
            raise ValueError("distillation needs both teacher=ZOO_FOLDER and distill=W > 0; "
                             f"got teacher={self.teacher!r}, distill={self.distill}")
        if self.teacher and self.task != "image":
            raise ValueError(f"teacher= is a CIFAR-10 model zoo, so it teaches task='image' "
                             f"only, got task={self.task!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def size(self) -> dict[str, Any]:
        """The generator's model options that are set, for its config class."""
        names = ("hidden", "layers", "heads", *SIZE_OPTIONS[self.generator])
        return {k: getattr(self, k) for k in names if getattr(self, k) is not None}


# The spread weight image GHN runs get by default: in 1,200-step CPU runs it lifted accuracy
# after 200 SGD steps on held-out VGG and ResNet from 33.0 and 29.5 (no spread) to 49.4 and
# 43.0, and zero-shot accuracy from 18.5 to 20.5; the best of the weights 0, 0.1, 0.5 and 1.0
# (docs/results/decoder-family.md).
DEFAULT_SPREAD = 0.5

# Model options that only one generator has (set for the other one: an error).
SIZE_OPTIONS = {"ghn": ("rank", "features"),
                "diffusion": ("chunk", "graph_layers", "prediction_type", "window",
                              "train_windows", "ranked_task", "class_rows", "group",
                              "token_hidden", "snr_boost")}


def as_tuple(value: Any) -> tuple:
    """Distinct items, in order, of an iterable, one value, or a comma-separated string:
    how list options are given (``seeds=0,1``, ``ks=[0,50]`` or a TOML list)."""
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    elif not isinstance(value, Iterable):
        value = [value]
    return tuple(dict.fromkeys(value))


def drop_removed(values: dict[str, Any], source: str, cls: type = TrainConfig,
                 ) -> dict[str, Any]:
    """``values`` without the options ``cls.removed`` lists, so an old run's config still
    loads; one set to a value at which it did something is an error, not a silent change."""
    removed = getattr(cls, "removed", {})
    for key, neutral in removed.items():
        if key in values and neutral is not None and values[key] not in neutral:
            raise ValueError(
                f"{source} sets {key}={values[key]!r}, but {key} was removed from "
                f"{cls.__name__} (no measured result supported it): this version cannot "
                f"continue or repeat that run; remove the key or set it to "
                f"{' or '.join(map(repr, neutral))}")
    return {k: v for k, v in values.items() if k not in removed}


def _check_keys(values: dict[str, Any], source: str, cls: type = TrainConfig) -> None:
    known = [f.name for f in fields(cls)]
    for key in values:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise ValueError(f"unknown {cls.__name__} option {key!r} in {source}{hint}; "
                             f"options: {', '.join(known)}")


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def load_config(path: str | Path | None = None, overrides: list[str] | None = None,
                cls: type[Config] = TrainConfig) -> Config:
    """A ``cls`` config from a ``.toml``/``.yaml`` file (optional) and ``key=value`` overrides.

    ``cls`` is any dataclass of options (default :class:`TrainConfig`).

    Unknown keys fail with the closest valid names, so a typo never trains silently
    with a default.
    """
    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file {path} does not exist")
        if path.suffix == ".toml":
            import tomllib

            values = tomllib.loads(path.read_text())
        elif path.suffix in (".yaml", ".yml"):
            import yaml

            values = yaml.safe_load(path.read_text()) or {}
        else:
            raise ValueError(f"config files are .toml, .yaml or .yml, got {path.name}")
        if not isinstance(values, dict):
            raise ValueError(f"{path} must hold a table of options, got {type(values).__name__}")
        values = drop_removed(values, str(path), cls)
        _check_keys(values, str(path), cls)
    for item in overrides or []:
        key, sep, text = item.partition("=")
        if not sep:
            raise ValueError(f"overrides are key=value, got {item!r}")
        override = drop_removed({key: _parse_value(text)}, "overrides", cls)
        _check_keys(override, "overrides", cls)
        values.update(override)
    return cls(**values)
