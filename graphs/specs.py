"""Architecture specs: a name (and options) that resolves to a buildable model.

Accepted forms (see :func:`resolve`):

* ``"torchvision:resnet50"``: any model of ``torchvision.models.list_models()``;
* ``"hf:gpt2"``, ``"hf:llama"``, ``"hf:gpt2-large"``: a ``transformers`` config built from
  its ``model_type`` (plus a few well-known sizes), or a local config named by an explicit
  path (``"hf:./my-model"``, ``"hf:/abs/my-model/config.json"``; see
  :func:`is_config_path`); JSON overrides go in ``config``. Remote code is never run;
* ``"timm:NAME"`` when ``timm`` is installed;
* a user's ``nn.Module`` instance, or an import path ``"package.module:ClassName"``
  (Python API and CLI only: the HTTP service never imports user code).
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import json
import math
import os
import re
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import GraphBuildError, UnknownArchitectureError
from .inputs import hf_inputs, timm_inputs
from .meta import meta_init

SOURCES = ("torchvision", "hf", "timm", "python")
# Well-known Hub checkpoints whose config is a model_type plus these overrides.
HF_SIZES: dict[str, tuple[str, dict[str, Any]]] = {
    "gpt2-medium": ("gpt2", {"n_embd": 1024, "n_layer": 24, "n_head": 16}),
    "gpt2-large": ("gpt2", {"n_embd": 1280, "n_layer": 36, "n_head": 20}),
    "gpt2-xl": ("gpt2", {"n_embd": 1600, "n_layer": 48, "n_head": 25}),
    "bert-base": ("bert", {}),
    "bert-large": ("bert", {"hidden_size": 1024, "num_hidden_layers": 24,
                            "num_attention_heads": 16, "intermediate_size": 4096}),
    "t5-small": ("t5", {"d_model": 512, "num_layers": 6, "num_heads": 8, "d_ff": 2048}),
    "vit-base": ("vit", {}),
}
NUM_CLASSES_MAX = 2**31 - 1  # what every framework's int32 sizes hold
# Constructor options that read files or download weights: never accepted in a spec.
_FILE_OPTIONS = frozenset({"weights", "pretrained", "checkpoint_path", "pretrained_cfg",
                           "pretrained_cfg_overlay", "cache_dir", "pretrained_model_name_or_path",
                           "weights_backbone"})


@dataclass(frozen=True)
class ArchSpec:
    """A resolved architecture: where it comes from, its name, and its options.

    ``kwargs`` go to the model constructor (torchvision, timm, python) or override the
    ``transformers`` config (hf). ``module`` holds a user's own instance, if given.
    """

    source: str
    name: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    module: nn.Module | None = field(default=None, compare=False, repr=False)

    @property
    def label(self) -> str:
        return f"{self.source}:{self.name}"

    def canonical(self) -> dict[str, Any]:
        """JSON-ready identity of the spec (stored as ``hyperinit.arch`` in safetensors)."""
        return {"source": self.source, "name": self.name, "kwargs": self.kwargs}

    def to_json(self) -> str:
        return json.dumps(self.canonical(), sort_keys=True, separators=(",", ":"))

    def build(self, meta: bool = True) -> nn.Module:
        """The model, in eval mode, with parameters on ``meta`` and real buffers; with
        ``meta=False``, on CPU with the library's default initialization.

        A constructor that runs its own forward pass (SSDlite measures its backbone's
        output channels) cannot work on meta parameters: such a model is built on CPU.
        """
        if self.module is not None:
            return self.module
        try:
            try:
                with meta_init() if meta else nullcontext():
                    model = _BUILDERS[self.source](self)
            except RuntimeError:
                if not meta:
                    raise
                model = _BUILDERS[self.source](self)
        except UnknownArchitectureError:
            raise
        except (TypeError, ValueError) as err:  # options the constructor or config rejects
            raise GraphBuildError(
                f"cannot build {self.label} with options {self.kwargs}: {err}") from err
        return model.eval()

    def example_inputs(self) -> Any:
        """A small batch the model's forward accepts (values irrelevant)."""
        if self.source == "hf":
            return _hf_inputs(self)
        if self.source == "timm":
            return timm_inputs(self.build(), self.kwargs)
        if self.source == "torchvision":
            return _torchvision_inputs(self)
        return None


def resolve(spec: str | dict[str, Any] | ArchSpec | nn.Module, num_classes: int | None = None,
            **kwargs: Any) -> ArchSpec:
    """Turn a spec string, a dict, or a module into an :class:`ArchSpec`.

    ``num_classes`` sets the classifier size (``num_labels`` for transformers); other
    keyword arguments go to the constructor or config. A dict takes the keys of
    :meth:`ArchSpec.canonical`. Unknown names raise :class:`UnknownArchitectureError`
    with the closest valid names.
    """
    if isinstance(spec, ArchSpec):
        return spec
    if isinstance(spec, nn.Module):
        return ArchSpec("python", type(spec).__qualname__, module=spec)
    if isinstance(spec, dict):
        unknown = set(spec) - {"source", "name", "kwargs"}
        if unknown or "source" not in spec or "name" not in spec:
            raise UnknownArchitectureError(
                f"an architecture dict needs 'source' and 'name' (and optional 'kwargs'); "
                f"got keys {sorted(spec)}")
        if not isinstance(spec.get("kwargs", {}), dict):
            raise UnknownArchitectureError(
                f"an architecture dict's 'kwargs' must be a dict, got "
                f"{type(spec['kwargs']).__name__}")
        kwargs = {**spec.get("kwargs", {}), **kwargs}
        spec = f"{spec['source']}:{spec['name']}"
    if not isinstance(spec, str):
        raise UnknownArchitectureError(
            f"an architecture is a spec string, a dict or an nn.Module; got {type(spec).__name__}")
    source, sep, name = spec.partition(":")
    if not sep or source not in SOURCES:
        raise UnknownArchitectureError(
            f"{spec!r} is not a spec: write SOURCE:NAME with SOURCE one of {', '.join(SOURCES)} "
            "(for example 'torchvision:resnet50' or 'hf:gpt2')")
    refused = sorted(set(kwargs) & _FILE_OPTIONS)
    if refused:
        raise UnknownArchitectureError(
            f"options {refused} load weights or files; specs describe architectures only "
            "(hyperinit predicts the weights)")
    check_finite(kwargs)
    if num_classes is not None:
        kwargs["num_labels" if source == "hf" else "num_classes"] = check_num_classes(num_classes)
    _CHECKS[source](name)
    return ArchSpec(source, name, dict(sorted(kwargs.items())))


def check_num_classes(num_classes: object) -> int:
    """``num_classes`` if it is an integer from 1 to :data:`NUM_CLASSES_MAX` (not a bool)."""
    if (isinstance(num_classes, bool) or not isinstance(num_classes, int)
            or not 1 <= num_classes <= NUM_CLASSES_MAX):
        raise GraphBuildError(f"num_classes must be an integer from 1 to {NUM_CLASSES_MAX:,}, "
                              f"got {num_classes!r}")
    return num_classes


def check_finite(options: dict[str, Any], where: str = "config") -> None:
    """Refuse infinite and NaN numbers anywhere in ``options`` (JSON has neither, though
    Python's parser reads ``Infinity`` and ``NaN``): no constructor or config means them."""
    stack: list[tuple[str, Any]] = [(where, options)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, float) and not math.isfinite(value):
            raise GraphBuildError(f"{path} is {value!r}: options take finite numbers only "
                                  "(JSON has no Infinity or NaN)")
        if isinstance(value, dict):
            stack.extend((f"{path}.{key}", item) for key, item in value.items())
        elif isinstance(value, list | tuple):
            stack.extend((f"{path}[{i}]", item) for i, item in enumerate(value))


def _unknown(kind: str, name: str, valid: list[str]) -> UnknownArchitectureError:
    close = difflib.get_close_matches(name, valid, n=5, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else f"; {len(valid)} are known"
    return UnknownArchitectureError(f"unknown {kind} {name!r}{hint}")


# ----- torchvision ----------------------------------------------------------------------
def _torchvision_names() -> list[str]:
    import torchvision

    return sorted(torchvision.models.list_models())


def _check_torchvision(name: str) -> None:
    if name not in _torchvision_names():
        raise _unknown("torchvision model", name, _torchvision_names())


def _build_torchvision(spec: ArchSpec) -> nn.Module:
    import torchvision

    builder = torchvision.models.get_model_builder(spec.name)
    kwargs = dict(spec.kwargs)
    if "weights_backbone" in inspect.signature(builder).parameters:
        # Detection and segmentation models fetch ImageNet backbone weights by default:
        # an init is never pretrained, and the download would fail offline.
        kwargs.setdefault("weights_backbone", None)
    return builder(weights=None, **kwargs)


def _torchvision_inputs(spec: ArchSpec) -> Any:
    """Images; clips of 16 frames for video models; an image pair for optical flow."""
    import torchvision

    size = spec.kwargs.get("image_size", 299 if spec.name == "inception_v3" else 224)
    if spec.name in torchvision.models.list_models(module=torchvision.models.video):
        return torch.zeros(2, 3, 16, size, size)
    if spec.name in torchvision.models.list_models(module=torchvision.models.optical_flow):
        return (torch.zeros(2, 3, 128, 128), torch.zeros(2, 3, 128, 128))
    return torch.zeros(2, 3, size, size)


# ----- transformers ---------------------------------------------------------------------
def is_config_path(name: str) -> bool:
    """Whether the ``NAME`` of ``hf:NAME`` is a local config: an explicit path, absolute or
    starting with ``./`` or ``../``. Any other name is a model type or size from the
    registry and never a file, so a folder ``gpt2/`` in the working directory (``hyperinit
    pull ... --out gpt2`` makes one) cannot stand in for ``hf:gpt2``."""
    return os.path.isabs(name) or re.split(r"[\\/]", name, maxsplit=1)[0] in (".", "..")


def hf_config(spec: ArchSpec):
    """The ``transformers`` config of an ``hf:`` spec, with its overrides (no model built)."""
    from transformers import AutoConfig

    overrides = dict(spec.kwargs)
    if is_config_path(spec.name):
        config = AutoConfig.from_pretrained(spec.name, trust_remote_code=False, **overrides)
    else:
        model_type, base = HF_SIZES.get(spec.name, (spec.name, {}))
        config = AutoConfig.for_model(model_type, **{**base, **overrides})
    config.use_cache = False
    if "num_labels" in overrides and getattr(config, "pad_token_id", 0) is None:
        # Sequence classifiers pool at the last non-pad token and refuse batches without a
        # pad id; decoder-only configs (GPT-2) have none, so pad with end-of-text as HF does.
        config.pad_token_id = getattr(config, "eos_token_id", None)
    return config


def _hf_model_types() -> list[str]:
    from transformers import CONFIG_MAPPING

    return sorted(CONFIG_MAPPING.keys())


def _check_hf(name: str) -> None:
    if is_config_path(name):
        if not Path(name).exists():
            raise UnknownArchitectureError(f"config file {name!r} does not exist")
        return
    if name in HF_SIZES or name in _hf_model_types():
        return
    if "/" in name or "\\" in name or name.endswith(".json"):
        raise UnknownArchitectureError(
            f"hf:{name} is not a transformers model type; a local config needs an explicit "
            f"path: hf:./{name} or an absolute one")
    raise _unknown("transformers model type", name, [*_hf_model_types(), *HF_SIZES])


def _hf_auto_class(config, wants_classes: bool):
    """The head that fits the model type: a classifier if classes were asked for, else
    the pre-training head (causal LM, seq2seq LM, masked LM), else the bare model."""
    import transformers as tf
    from transformers.models.auto import modeling_auto

    heads = ["IMAGE_CLASSIFICATION", "SEQUENCE_CLASSIFICATION"] if wants_classes else []
    heads += ["SEQ_TO_SEQ_CAUSAL_LM", "MASKED_LM", "CAUSAL_LM", "IMAGE_CLASSIFICATION"]
    for head in heads:
        mapping = getattr(modeling_auto, f"MODEL_FOR_{head}_MAPPING_NAMES")
        class_name = mapping.get(config.model_type)
        if isinstance(class_name, (tuple, list)):  # e.g. DeiT: plain and with-teacher heads
            class_name = class_name[0]
        if class_name:
            return getattr(tf, class_name)
    return tf.AutoModel


def _build_hf(spec: ArchSpec) -> nn.Module:
    return hf_model(hf_config(spec), wants_classes="num_labels" in spec.kwargs)


def hf_model(config, wants_classes: bool) -> nn.Module:
    """The model of a ``transformers`` config, with the head :func:`_hf_auto_class` picks."""
    cls = _hf_auto_class(config, wants_classes)
    if getattr(cls, "_supports_sdpa", False):  # the attention that traces in one op
        config._attn_implementation = "sdpa"
    if hasattr(cls, "from_config"):
        return cls.from_config(config)
    return cls._from_config(config)


def _hf_inputs(spec: ArchSpec) -> dict[str, torch.Tensor]:
    config = hf_config(spec)
    cls = _hf_auto_class(config, "num_labels" in spec.kwargs)
    return hf_inputs(config, getattr(cls, "main_input_name", "input_ids"))


# ----- timm -----------------------------------------------------------------------------
def _check_timm(name: str) -> None:
    try:
        import timm
    except ImportError as err:
        raise UnknownArchitectureError(
            "timm specs need the timm package: pip install 'hyperinit[timm]'") from err
    if name not in timm.list_models():
        raise _unknown("timm model", name, timm.list_models())


def _build_timm(spec: ArchSpec) -> nn.Module:
    import timm

    return timm.create_model(spec.name, pretrained=False, **spec.kwargs)


# ----- user code ------------------------------------------------------------------------
def _check_python(name: str) -> None:
    module_name, sep, attr = name.partition(":")
    if not sep:
        raise UnknownArchitectureError(
            f"python specs are 'package.module:ClassName', got {name!r}")


def _build_python(spec: ArchSpec) -> nn.Module:
    module_name, _, attr = spec.name.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as err:
        raise UnknownArchitectureError(f"cannot import {spec.name!r}: {err}") from err
    model = factory(**spec.kwargs)
    if not isinstance(model, nn.Module):
        raise UnknownArchitectureError(
            f"{spec.name!r} returned {type(model).__name__}, not an nn.Module")
    return model


_CHECKS = {"torchvision": _check_torchvision, "hf": _check_hf, "timm": _check_timm,
           "python": _check_python}
_BUILDERS = {"torchvision": _build_torchvision, "hf": _build_hf, "timm": _build_timm,
             "python": _build_python}
