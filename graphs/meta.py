"""Build models without allocating their parameters."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn

_register = nn.Module.register_parameter
_local = threading.local()  # .depth: how many meta_init contexts this thread is inside
_lock = threading.Lock()
_active = 0  # meta_init contexts open in all threads; the patch is installed while > 0


def _register_on_meta(module: nn.Module, name: str, param: nn.Parameter | None) -> None:
    _register(module, name, param)
    if getattr(_local, "depth", 0) and param is not None and param.device.type != "meta":
        module._parameters[name] = nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)


@contextmanager
def meta_init() -> Iterator[None]:
    """Inside this context, new modules put their parameters on the ``meta`` device.

    Buffers stay real, so values computed at construction (position ids, rotary
    frequencies, relative-position indices) survive; parameters cost no memory and their
    default initialization costs no time. A 774M-parameter GPT-2 Large builds in well
    under a second this way.

    It applies to the calling thread only: modules other threads build at the same time
    (the service builds in a thread pool) keep real parameters unless they are inside
    ``meta_init`` too.
    """
    global _active
    with _lock:
        if _active == 0:
            nn.Module.register_parameter = _register_on_meta
        _active += 1
    _local.depth = getattr(_local, "depth", 0) + 1
    try:
        yield
    finally:
        _local.depth -= 1
        with _lock:
            _active -= 1
            if _active == 0:
                nn.Module.register_parameter = _register
