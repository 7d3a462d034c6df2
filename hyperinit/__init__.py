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

__version__ = "0.3.0"

from graphs.lazy import lazy_exports  # noqa: E402

from .errors import (  # noqa: E402
    CheckpointError,
    DiskFullError,
    GeneratorLimitError,
    OutputPathError,
)

# Public name -> the submodule that defines it.
_LAZY = {
    "GHNConfig": "ghn", "GraphHyperNetwork": "ghn",
    "from_hub": "hub", "pull_init": "hub", "push_generator": "hub", "push_init": "hub",
    "calibrate_batchnorm": "predict", "list_generators": "predict",
    "load_generator": "predict", "predict": "predict", "predict_state_dict": "predict",
    "save_init": "predict",
    "DiffusionConfig": "diffusion", "WeightDiffusion": "diffusion", "sample": "diffusion",
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
    "GraphHyperNetwork",
    "OutputPathError",
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
    "sample",
    "save_init",
]
