"""Build models without allocating their parameters."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn


@contextmanager
def meta_init() -> Iterator[None]:
    """Inside this context, new modules put their parameters on the ``meta`` device.

    Buffers stay real, so values computed at construction (position ids, rotary
    frequencies, relative-position indices) survive; parameters cost no memory and their
    default initialization costs no time. A 774M-parameter GPT-2 Large builds in well
    under a second this way.
    """
    register = nn.Module.register_parameter

    def register_on_meta(module: nn.Module, name: str, param: nn.Parameter | None) -> None:
        register(module, name, param)
        if param is not None and param.device.type != "meta":
            module._parameters[name] = nn.Parameter(
                param.to("meta"), requires_grad=param.requires_grad)

    nn.Module.register_parameter = register_on_meta
    try:
        yield
    finally:
        nn.Module.register_parameter = register
