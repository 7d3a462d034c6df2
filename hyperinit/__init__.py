"""hyperinit: predict and generate initial parameters for any neural network architecture.

    import hyperinit
    model = hyperinit.predict("torchvision:resnet50", num_classes=10)
    hyperinit.save_init("hf:gpt2", "gpt2-init.safetensors", seed=1)

The public names load on first use, so that ``import hyperinit`` (and the ``hyperinit``
command's start-up, ``--help`` included) costs no torch, transformers or diffusers import:
those take seconds, and a command only pays for the ones it needs.
"""

import sys
import types
from typing import Any

from graphs.lazy import lazy_exports

from .errors import (
    CheckpointError,
    DiskFullError,
    GeneratorLimitError,
    OutputPathError,
    TaskError,
)
from .version import __version__

# Public name -> the submodule that defines it.
_LAZY = {
    "Generator": "generator", "PredictDefaults": "generator",
    "GHNConfig": "ghn", "GraphHyperNetwork": "ghn",
    "DiffusionConfig": "diffusion", "WeightDiffusion": "diffusion", "sample": "diffusion",
    "list_generators": "catalog", "load_generator": "catalog",
    "from_hub": "hub", "pull_init": "hub",
    "push_generator": "publish", "push_init": "publish",
    "calibrate_batchnorm": "predict", "predict": "predict", "predict_state_dict": "predict",
    "save_init": "predict",
}


__getattr__, __dir__ = lazy_exports(__name__, _LAZY)


class _Package(types.ModuleType):
    """The package module, so that ``hyperinit.predict`` stays the function.

    Loading a submodule sets it as an attribute of its package; for ``hyperinit.predict``
    (the module that defines the function ``predict``) that would replace the function
    by the module whenever the module is imported before the function is used.
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "predict" and isinstance(value, types.ModuleType):
            value = value.predict
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package

__all__ = [
    "CheckpointError",
    "DiskFullError",
    "GeneratorLimitError",
    "DiffusionConfig",
    "GHNConfig",
    "Generator",
    "GraphHyperNetwork",
    "OutputPathError",
    "PredictDefaults",
    "TaskError",
    "WeightDiffusion",
    "calibrate_batchnorm",
    "from_hub",
    "list_generators",
    "load_generator",
    "predict",
    "predict_state_dict",
    "pull_init",
    "push_generator",
    "push_init",
    "__version__",
    "sample",
    "save_init",
]
