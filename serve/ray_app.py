"""Ray Serve deployment of the service: the same FastAPI app, replicated over a Ray cluster.

    serve run serve.ray_app:app                       # defaults, one replica
    serve run serve.ray_app:build_app num_replicas=4 generators=untrained,/models/ghn-t \
        cache_dir=/var/cache/hyperinit max_params=500000000

Each replica builds its own app (:func:`serve.create_app`) in its own process: generators are
loaded there, and its disk cache is ``<cache_dir>/replica-<local rank>``, because a cache
folder belongs to one process (see ``serve/cache.py``). Ray's proxy spreads requests over
the replicas; within a replica the app's own limits (generation slots, queue, 429/503)
apply. Ray is imported only when the deployment is built, so this module imports without
it. ``serve/README.md`` shows the multi-node launch.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .config import ServeConfig

# How `serve run ... key=value` strings become ServeConfig fields.
_FIELDS: dict[str, Callable[[str], Any]] = {
    "generators": lambda value: tuple(v for v in value.split(",") if v),
    "default_generator": str,
    "cache_dir": Path,
    "cache_max_bytes": int,
    "max_concurrent": int,
    "queue_limit": int,
    "request_timeout_s": float,
    "retry_after_s": int,
    "max_params": int,
    "max_body_bytes": int,
}
# Deployment options: replicas, and CPUs reserved per replica (a generation uses them all).
_DEPLOYMENT: dict[str, Callable[[str], Any]] = {
    "num_replicas": lambda value: value if value == "auto" else int(value),
    "num_cpus": float,
}


class HyperinitReplica:
    """One replica. Ray calls ``__serve_build_asgi_app__`` in the replica's process."""

    def __init__(self, config: ServeConfig) -> None:
        self.config = config

    def __serve_build_asgi_app__(self):
        from ray import serve

        from .app import create_app

        rank = serve.get_replica_context().rank.local_rank
        cache_dir = Path(self.config.cache_dir) / f"replica-{rank}"
        return create_app(dataclasses.replace(self.config, cache_dir=cache_dir))


def build_app(args: dict[str, str] | None = None):
    """A Ray Serve application (``serve run serve.ray_app:build_app key=value ...``).

    Keys: the :class:`ServeConfig` fields (``generators`` comma-separated) plus
    ``num_replicas`` (a number or ``auto``) and ``num_cpus`` per replica. The bearer token
    comes from ``HYPERINIT_SERVE_TOKEN`` in the replicas' environment, never from arguments
    (they show in the Ray dashboard).
    """
    from ray import serve

    args = dict(args or {})
    unknown = sorted(set(args) - set(_FIELDS) - set(_DEPLOYMENT))
    if unknown:
        raise ValueError(f"unknown arguments {unknown}: use "
                         f"{', '.join([*_FIELDS, *_DEPLOYMENT])}")
    config = ServeConfig(token=os.environ.get("HYPERINIT_SERVE_TOKEN") or None,
                         **{k: _FIELDS[k](v) for k, v in args.items() if k in _FIELDS})
    options = {k: _DEPLOYMENT[k](v) for k, v in args.items() if k in _DEPLOYMENT}
    deployment = serve.deployment(
        name="hyperinit",
        num_replicas=options.get("num_replicas", 1),
        ray_actor_options={"num_cpus": options.get("num_cpus", 1)},
        # Admit requests freely: cached ones are cheap, and each replica's own queue limit
        # answers 429 for generations it cannot take.
        max_ongoing_requests=256,
    )(serve.ingress()(HyperinitReplica))
    return deployment.bind(config)


def __getattr__(name: str) -> Any:
    """``serve.ray_app:app``: the application with default settings, built on first access."""
    if name == "app":
        return build_app()
    raise AttributeError(f"module 'serve.ray_app' has no attribute {name!r}")
