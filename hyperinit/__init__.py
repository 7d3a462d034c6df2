"""hyperinit: predict and generate initial parameters for any neural network architecture.

    import hyperinit
    model = hyperinit.predict("torchvision:resnet50", num_classes=10)
    hyperinit.save_init("hf:gpt2", "gpt2-init.safetensors", seed=1)
"""

__version__ = "0.3.0"

from .errors import (  # noqa: E402
    CheckpointError,
    DiskFullError,
    GeneratorLimitError,
    OutputPathError,
)
from .ghn import GHNConfig, GraphHyperNetwork  # noqa: E402
from .hub import from_hub, pull_init, push_generator, push_init  # noqa: E402
from .predict import (  # noqa: E402
    calibrate_batchnorm,
    list_generators,
    load_generator,
    predict,
    predict_state_dict,
    save_init,
)

_DIFFUSION = ("DiffusionConfig", "WeightDiffusion", "sample")


def __getattr__(name: str):
    """The diffusion generator loads on first use: it imports diffusers (seconds)."""
    if name in _DIFFUSION:
        from . import diffusion

        return getattr(diffusion, name)
    raise AttributeError(f"module 'hyperinit' has no attribute {name!r}")


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
