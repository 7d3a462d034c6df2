"""The operation vocabulary of architecture graphs.

Every node of an :class:`~graphs.ArchGraph` has one op type from :data:`OPS`. Autograd
functions are mapped to op types by :func:`op_of`. Two kinds of autograd functions never
become nodes:

* **layout ops** (views, transposes, permutes, expands, copies, dropout) carry no computation
  at initialization, so they are folded into the edges that pass through them; the graph
  counts how many were folded;
* the parameter leaves themselves (``AccumulateGrad``), which become parameters owned by
  the node that consumes them.

Any other function that is not in the table becomes a ``generic`` node and is listed in
``ArchGraph.unrecognized``: nothing is dropped silently.
"""

from __future__ import annotations

# Op types, grouped. The order is part of the checkpoint format of the generators (an op's
# index is its embedding row): append new types at the end, never reorder.
OPS: tuple[str, ...] = (
    "input",
    "generic",
    # parameterized layers
    "conv",
    "linear",
    "embedding",
    "pos_embedding",
    "token",
    "scale",
    "batch_norm",
    "layer_norm",
    "group_norm",
    "instance_norm",
    "rms_norm",
    "attention",
    # activations
    "relu",
    "relu6",
    "gelu",
    "silu",
    "sigmoid",
    "tanh",
    "hardswish",
    "hardsigmoid",
    "elu",
    "leaky_relu",
    "mish",
    "softplus",
    "prelu",
    "softmax",
    "log_softmax",
    # pooling
    "max_pool",
    "avg_pool",
    "adaptive_avg_pool",
    "adaptive_max_pool",
    # combination and arithmetic
    "add",
    "sub",
    "mul",
    "div",
    "matmul",
    "concat",
    "mean",
    "sum",
    "pow",
    "sqrt",
    "rsqrt",
    "exp",
    "neg",
    "clamp",
    "where",
    "slice",
    "pad",
    "roll",
    "upsample",
    "unused",
    "vector_norm",
)
OP_INDEX: dict[str, int] = {name: i for i, name in enumerate(OPS)}

# Prefixes of autograd function class names (the trailing "Backward<N>" stripped) -> op type.
_FUNCTIONS: dict[str, str] = {
    "Convolution": "conv",
    "CudnnConvolution": "conv",
    "MkldnnConvolution": "conv",
    "Addmm": "linear",
    "Mm": "matmul",
    "Bmm": "matmul",
    "Baddbmm": "matmul",
    "Linear": "linear",
    "Embedding": "embedding",
    "EmbeddingBag": "embedding",
    "NativeBatchNorm": "batch_norm",
    "CudnnBatchNorm": "batch_norm",
    "NativeLayerNorm": "layer_norm",
    "NativeGroupNorm": "group_norm",
    "FusedRmsNorm": "rms_norm",
    "RmsNorm": "rms_norm",
    "Relu": "relu",
    "Threshold": "relu",
    "Hardtanh": "relu6",
    "Gelu": "gelu",
    "Silu": "silu",
    "Sigmoid": "sigmoid",
    "Tanh": "tanh",
    "Hardswish": "hardswish",
    "Hardsigmoid": "hardsigmoid",
    "Elu": "elu",
    "LeakyRelu": "leaky_relu",
    "Mish": "mish",
    "Softplus": "softplus",
    "PreluKernel": "prelu",
    "Prelu": "prelu",
    "Softmax": "softmax",
    "SafeSoftmax": "softmax",
    "LogSoftmax": "log_softmax",
    "MaxPool2DWithIndices": "max_pool",
    "MaxPool3DWithIndices": "max_pool",
    "MaxPool1DWithIndices": "max_pool",
    "AvgPool2D": "avg_pool",
    "AvgPool3D": "avg_pool",
    "AvgPool1D": "avg_pool",
    "AdaptiveAvgPool2D": "adaptive_avg_pool",
    "AdaptiveAvgPool3D": "adaptive_avg_pool",
    "AdaptiveMaxPool2D": "adaptive_max_pool",
    "AdaptiveMaxPool3D": "adaptive_max_pool",
    "Add": "add",
    "Sub": "sub",
    "Rsub": "sub",
    "Mul": "mul",
    "Div": "div",
    "Cat": "concat",
    "Stack": "concat",
    "Mean": "mean",
    "Sum": "sum",
    "Pow": "pow",
    "Sqrt": "sqrt",
    "Rsqrt": "rsqrt",
    "Exp": "exp",
    "Neg": "neg",
    "Clamp": "clamp",
    "ClampMin": "clamp",
    "ClampMax": "clamp",
    "Where": "where",
    "MaskedFill": "where",
    "Split": "slice",
    "SplitWithSizes": "slice",
    "Slice": "slice",
    "Select": "slice",
    "Index": "slice",
    "Unbind": "slice",
    "Narrow": "slice",
    "Gather": "slice",
    "CopySlices": "slice",
    "LinalgVectorNorm": "vector_norm",
    "Norm": "vector_norm",
    "ConstantPadNd": "pad",
    "ReflectionPad2D": "pad",
    "ReplicationPad2D": "pad",
    "Roll": "roll",
    "UpsampleNearest2D": "upsample",
    "UpsampleBilinear2D": "upsample",
    "UpsampleBicubic2D": "upsample",
}

# Functions folded into edges: they move or copy data without computing anything new.
LAYOUT_FUNCTIONS: frozenset[str] = frozenset(
    {
        "View",
        "UnsafeView",
        "Reshape",
        "ReshapeAlias",
        "T",
        "Transpose",
        "Permute",
        "Expand",
        "Squeeze",
        "Unsqueeze",
        "Clone",
        "ToCopy",
        "Alias",
        "AsStrided",
        "Contiguous",
        "NativeDropout",
        "Dropout",
        "Flatten",
        "Unflatten",
        "Repeat",
        "Lift",
        "Detach",
    }
)

# Ops whose nodes own weights that a decoder must produce, by role.
NORM_OPS = frozenset({"batch_norm", "layer_norm", "group_norm", "instance_norm", "rms_norm"})


def function_name(fn: object) -> str:
    """The autograd function's class name without its ``Backward<N>`` suffix."""
    name = type(fn).__name__
    cut = name.rfind("Backward")
    return name[:cut] if cut > 0 else name


def op_of(name: str) -> str:
    """Op type for an autograd function name (see :func:`function_name`)."""
    if name in _FUNCTIONS:
        return _FUNCTIONS[name]
    if name.startswith("ScaledDotProduct") or name.endswith("Attention"):
        return "attention"
    return "generic"


def is_layout(name: str) -> bool:
    """Whether the function is folded into edges (see module docstring)."""
    return name in LAYOUT_FUNCTIONS
