"""Settings of the HTTP service, as one plain dataclass (the CLI and Ray Serve fill it in)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from hyperinit.paths import cache_home


def _default_generators() -> tuple[str, ...]:
    """Every shipped generator plus ``untrained``, the Python API's default first: the first
    is the service's default, so a bare ``hyperinit serve`` predicts like ``hyperinit
    predict``."""
    from hyperinit.catalog import default_generator, list_generators

    first = default_generator()
    return (first, *(name for name in list_generators() if name != first))


def _default_cache_dir() -> Path:
    return cache_home() / "serve"


@dataclass
class ServeConfig:
    """What the service allows, and how much work and disk it may use.

    Attributes:
        generators: generators a request may name: shipped names (``hyperinit
            list_generators``), ``"untrained"``, or checkpoint folders (requested by the
            folder's name). Default: every shipped generator plus ``untrained``, the
            Python API's and CLI's default generator first.
        default_generator: used when a request names none; default: the first of
            ``generators``.
        cache_dir: folder of the content-addressed init cache. One server process per
            folder: the size bound and LRU order are tracked in memory.
        cache_max_bytes: the cache evicts least recently used inits above this size.
        max_concurrent: generations running at once (each uses all of torch's threads).
        queue_limit: generations waiting for a slot; beyond it requests get 429.
        request_timeout_s: how long a request may take, over every step (resolving it,
            reading the cache, generating), before a 503 (a generation goes on and lands in
            the cache, so a retry is fast).
        retry_after_s: the ``Retry-After`` seconds sent with 429 and 503.
        max_params: largest architecture (parameters, tied ones once) the service
            generates for; ``graphs.check_size`` checks it, and at most 10,000 modules,
            before anything is built.
        max_body_bytes: largest request body accepted (413 above).
        token: if set, ``/v1/*`` needs ``Authorization: Bearer <token>``.
    """

    generators: tuple[str, ...] = field(default_factory=_default_generators)
    default_generator: str | None = None
    cache_dir: Path = field(default_factory=_default_cache_dir)
    cache_max_bytes: int = 10 * 1024**3
    max_concurrent: int = 1
    queue_limit: int = 8
    request_timeout_s: float = 300.0
    retry_after_s: int = 5
    max_params: int = 2_000_000_000  # graphs.DEFAULT_MAX_PARAMS (this module imports no torch)
    max_body_bytes: int = 64 * 1024
    token: str | None = None

    def __post_init__(self) -> None:
        self.generators = tuple(str(g) for g in self.generators)
        self.cache_dir = Path(self.cache_dir)
        if not self.generators:
            raise ValueError("ServeConfig.generators is empty: name at least one generator "
                             "(a shipped name, 'untrained', or a checkpoint folder)")
        positive = {"cache_max_bytes": self.cache_max_bytes, "max_concurrent": self.max_concurrent,
                    "request_timeout_s": self.request_timeout_s, "max_params": self.max_params,
                    "max_body_bytes": self.max_body_bytes, "retry_after_s": self.retry_after_s}
        for name, value in positive.items():
            if value <= 0:
                raise ValueError(f"ServeConfig.{name} must be positive, got {value}")
        if self.queue_limit < 0:
            raise ValueError(f"ServeConfig.queue_limit must be 0 or more, got {self.queue_limit}")
        if self.token is not None and not self.token.strip():
            raise ValueError("ServeConfig.token is empty: give a real token, or None for no auth")
