"""Prometheus metrics, kept in memory and written in the text exposition format (0.0.4).

A few counters, gauges and one histogram do not need a client library: :class:`Metrics`
holds them behind a lock (generation threads record into it too), :class:`MetricsMiddleware`
counts every HTTP request by route template and status, and :meth:`Metrics.render` writes
the ``/metrics`` page.
"""

from __future__ import annotations

import bisect
import threading
from collections import Counter
from collections.abc import Mapping

from starlette.types import ASGIApp, Message, Receive, Scope, Send

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
GENERATION_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
PREFIX = "hyperinit_"


def _label(value: str) -> str:
    return value.replace("\\", r"\\").replace('"', r"\"").replace("\n", r"\n")


def _series(name: str, labels: Mapping[str, str], value: float) -> str:
    inner = ",".join(f'{k}="{_label(v)}"' for k, v in labels.items())
    return f"{PREFIX}{name}{{{inner}}} {value:g}" if inner else f"{PREFIX}{name} {value:g}"


def _header(name: str, kind: str, help_text: str) -> list[str]:
    return [f"# HELP {PREFIX}{name} {help_text}", f"# TYPE {PREFIX}{name} {kind}"]


class Metrics:
    """Request counts, cache hits/misses, generation time, and requests in flight."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: Counter[tuple[str, str, str]] = Counter()  # (method, route, status)
        self.requests_in_flight = 0
        self.cache: Counter[str] = Counter()  # "hit", "miss", "shared" (joined a generation)
        self._buckets = [0] * (len(GENERATION_BUCKETS) + 1)  # the last one is +Inf
        self._generation_sum = 0.0

    def count_request(self, method: str, route: str, status: int) -> None:
        with self._lock:
            self.requests[(method, route, str(status))] += 1

    def count_cache(self, outcome: str) -> None:
        with self._lock:
            self.cache[outcome] += 1

    def observe_generation(self, seconds: float) -> None:
        with self._lock:
            self._buckets[bisect.bisect_left(GENERATION_BUCKETS, seconds)] += 1
            self._generation_sum += seconds

    def render(self, state: Mapping[str, tuple[str, str, float]]) -> str:
        """The exposition text; ``state`` adds name -> (type, help, value) owned elsewhere."""
        with self._lock:
            lines = _header("http_requests_total", "counter",
                            "HTTP requests by method, route template and status code.")
            lines += [_series("http_requests_total",
                              {"method": m, "route": r, "status": s}, n)
                      for (m, r, s), n in sorted(self.requests.items())]
            lines += _header("http_requests_in_flight", "gauge", "HTTP requests being handled.")
            lines.append(_series("http_requests_in_flight", {}, self.requests_in_flight))
            lines += _header("cache_requests_total", "counter",
                             "Init requests by cache outcome: hit (on disk), shared (joined an "
                             "identical generation in progress), miss (not cached: generated, "
                             "or refused by the checks that run before generating).")
            lines += [_series("cache_requests_total", {"outcome": o}, self.cache[o])
                      for o in ("hit", "miss", "shared")]
            lines += _header("generation_seconds", "histogram",
                             "Time to generate and write one init.")
            cumulative = 0
            for bound, count in zip((*GENERATION_BUCKETS, float("inf")), self._buckets,
                                    strict=True):
                cumulative += count
                le = "+Inf" if bound == float("inf") else f"{bound:g}"
                lines.append(_series("generation_seconds_bucket", {"le": le}, cumulative))
            lines.append(_series("generation_seconds_sum", {}, self._generation_sum))
            lines.append(_series("generation_seconds_count", {}, cumulative))
        for name, (kind, help_text, value) in state.items():
            lines += _header(name, kind, help_text)
            lines.append(_series(name, {}, value))
        return "\n".join(lines) + "\n"


class MetricsMiddleware:
    """Counts each HTTP request by method, matched route template and final status."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500  # if the app raises before answering, the server answers 500

        async def record_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        self.metrics.requests_in_flight += 1
        try:
            await self.app(scope, receive, record_status)
        finally:
            self.metrics.requests_in_flight -= 1
            route = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.count_request(scope["method"], route, status)
