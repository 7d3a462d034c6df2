"""Settings that hold while a model is traced and are restored afterwards."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn

# transformers' experts implementation whose forward depends on shapes only.
TRACEABLE_EXPERTS = "batched_mm"
# torch loggers that report an op failing on fake tensors, traceback and all, at ERROR.
TORCH_LOGGERS = ("torch._subclasses.fake_tensor",)


@contextmanager
def quiet_torch_logs() -> Iterator[None]:
    """Drop what the :data:`TORCH_LOGGERS` log from this thread inside the block.

    An op that fails on fake tensors is logged with its traceback before its exception
    is raised, and that exception is what our one :class:`~graphs.GraphBuildError` says,
    so the log (repeated for every input tried) only buries it. Other threads, such as
    the service's other requests, keep their records.
    """
    thread = threading.get_ident()

    def other_thread(_record: logging.LogRecord) -> bool:
        return threading.get_ident() != thread

    loggers = [logging.getLogger(name) for name in TORCH_LOGGERS]
    for logger in loggers:
        logger.addFilter(other_thread)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(other_thread)


@contextmanager
def traceable_experts(model: nn.Module) -> Iterator[None]:
    """Run the mixture-of-experts layers of the transformers models in ``model`` (Mixtral,
    Qwen-MoE, ...) with :data:`TRACEABLE_EXPERTS` inside the block, then with their own
    implementation again.

    Their default, ``grouped_mm``, fails on fake float32 tensors (its meta kernel refuses
    float32), and ``eager`` loops over the experts that tokens were routed to, which
    depends on values; ``batched_mm`` gathers each token's expert weights and multiplies
    them in one batch. It computes the same function of the same parameters, so the graph
    is the model's.
    """
    models = [m for m in model.modules() if _can_set_experts(m)]
    originals = [m.get_experts_implementation() for m in models]
    for m in models:
        m.set_experts_implementation(TRACEABLE_EXPERTS)
    try:
        yield
    finally:
        for m, original in reversed(list(zip(models, originals, strict=True))):
            m.set_experts_implementation(original)


def _can_set_experts(module: nn.Module) -> bool:
    """Whether ``module`` is a transformers model whose experts implementation can be set
    (transformers 5 and later, MoE models only)."""
    can_set = getattr(module, "_can_set_experts_implementation", None)
    return can_set is not None and hasattr(module, "set_experts_implementation") and can_set()
