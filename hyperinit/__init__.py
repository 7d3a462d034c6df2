"""hyperinit: predict and generate initial parameters for any neural network architecture.

    import hyperinit
    model = hyperinit.predict("torchvision:resnet50", num_classes=10)
    hyperinit.save_init("hf:gpt2", "gpt2-init.safetensors", seed=1)
"""

__version__ = "0.1.0"

from .errors import CheckpointError, OutputPathError  # noqa: E402
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

__all__ = [
    "CheckpointError",
    "GHNConfig",
    "GraphHyperNetwork",
    "OutputPathError",
    "calibrate_batchnorm",
    "from_hub",
    "list_generators",
    "load_generator",
    "predict",
    "predict_state_dict",
    "pull_init",
    "push_generator",
    "push_init",
    "save_init",
]
