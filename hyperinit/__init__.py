"""hyperinit: predict and generate initial parameters for any neural network architecture."""

__version__ = "0.1.0"
