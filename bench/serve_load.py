"""Load benchmark of the HTTP service: throughput and latency of cached and uncached inits.

Run with ``.venv/bin/python bench/serve_load.py`` (``--help`` for the knobs).

It starts ``hyperinit serve`` (with the ``untrained`` generator and a fresh cache in a temp
folder) in a subprocess on a free loopback port, then drives it from client threads with
``httpx``:

* **uncached**: requests for the same architecture with distinct seeds, so each one is a
  generation (they queue behind ``--max-concurrent`` generation slots);
* **cached**: one request repeated, answered from the disk cache after the first.

Each workload is bounded both in requests (``--uncached``, ``--cached``) and in time
(``--max-seconds``: no request is started after that). It prints a markdown table with
throughput (requests/s and MB/s of safetensors sent) and p50/p99 latency per request.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
COLUMNS = ("workload", "requests", "200", "other", "wall s", "req/s", "MB/s", "p50 ms", "p99 ms")


@dataclass
class Result:
    """Outcome of one workload."""

    name: str
    latencies: list[float] = field(default_factory=list)  # of the 200 answers
    statuses: Counter[int] = field(default_factory=Counter)
    first_error: str = ""
    nbytes: int = 0
    wall: float = 0.0

    def row(self) -> list[str]:
        ok = sorted(self.latencies)
        other = ", ".join(f"{n}x {s}" for s, n in sorted(self.statuses.items()) if s != 200)
        return [self.name, str(self.statuses.total()), str(len(ok)), other or "-",
                f"{self.wall:.2f}", f"{len(ok) / self.wall:.2f}",
                f"{self.nbytes / 1e6 / self.wall:.1f}",
                f"{percentile(ok, 50) * 1e3:.1f}", f"{percentile(ok, 99) * 1e3:.1f}"]


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile of sorted values (NaN if none)."""
    if not values:
        return math.nan
    return values[max(0, math.ceil(q / 100 * len(values)) - 1)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(port: int, cache: Path, max_concurrent: int, queue_limit: int,
                 timeout: float) -> subprocess.Popen:
    args = ["--host", "127.0.0.1", "--port", str(port), "--generator", "untrained",
            "--cache-dir", str(cache), "--max-concurrent", str(max_concurrent),
            "--queue-limit", str(queue_limit), "--log-level", "warning"]
    env = {k: v for k, v in os.environ.items() if k != "HYPERINIT_SERVE_TOKEN"}  # no auth
    return subprocess.Popen([sys.executable, "-m", "hyperinit.cli", "serve", *args], cwd=ROOT,
                            env=env)


def wait_ready(client: httpx.Client, server: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the server exited with code {server.returncode}")
        try:
            if client.get("/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"the server did not answer /healthz within {timeout:.0f} s")


def run(client: httpx.Client, name: str, bodies: list[dict], threads: int,
        max_seconds: float) -> Result:
    """POST every body from ``threads`` threads; none is started after ``max_seconds``."""
    result = Result(name)
    start = time.perf_counter()

    def one(body: dict) -> tuple[float, httpx.Response] | None:
        if time.perf_counter() - start > max_seconds:
            return None
        t0 = time.perf_counter()
        response = client.post("/v1/inits", json=body)
        return time.perf_counter() - t0, response

    with ThreadPoolExecutor(threads) as pool:
        for outcome in pool.map(one, bodies):
            if outcome is None:
                continue
            seconds, response = outcome
            result.statuses[response.status_code] += 1
            if response.status_code == 200:
                result.latencies.append(seconds)
                result.nbytes += len(response.content)
            elif not result.first_error:
                result.first_error = f"{response.status_code} {response.text[:300]}"
    result.wall = time.perf_counter() - start
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="torchvision:resnet18", help="architecture spec")
    parser.add_argument("--num-classes", type=int, help="classifier size (default: the model's)")
    parser.add_argument("--config", type=json.loads, default={}, metavar="JSON",
                        help="model options, as in the request's 'config'")
    parser.add_argument("--uncached", type=int, default=8, help="uncached requests (seeds)")
    parser.add_argument("--cached", type=int, default=200, help="cached requests")
    parser.add_argument("--threads", type=int, default=8, help="client threads")
    parser.add_argument("--max-concurrent", type=int, default=1,
                        help="the server's generation slots")
    parser.add_argument("--max-seconds", type=float, default=120,
                        help="start no request of a workload after this long")
    args = parser.parse_args()

    port = free_port()
    with tempfile.TemporaryDirectory(prefix="hyperinit-serve-bench-") as cache:
        # The queue holds every uncached request, so the benchmark measures queueing, not 429s.
        server = start_server(port, Path(cache), args.max_concurrent, args.uncached,
                              args.max_seconds * 2)
        limits = httpx.Limits(max_connections=args.threads * 2)
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=args.max_seconds * 2,
                              limits=limits) as client:
                wait_ready(client, server, timeout=120)
                base = {"arch": args.arch, "num_classes": args.num_classes, "config": args.config}
                uncached = run(client, "uncached (distinct seeds)",
                               [{**base, "seed": 1000 + i} for i in range(args.uncached)],
                               args.threads, args.max_seconds)
                cached = run(client, "cached (same request)",
                             [{**base, "seed": 1000}] * args.cached, args.threads,
                             args.max_seconds)
        finally:
            server.terminate()
            server.wait(30)
    classes = f" with {args.num_classes} classes" if args.num_classes else ""
    print(f"`python {' '.join(sys.argv)}`: {args.arch}{classes}, generator untrained, "
          f"{args.threads} client threads, "
          f"{args.max_concurrent} generation slot(s), {os.cpu_count()} CPUs\n")
    print("| " + " | ".join(COLUMNS) + " |")
    print("|" + "---|" * len(COLUMNS))
    for result in (uncached, cached):
        print("| " + " | ".join(result.row()) + " |")
    for result in (uncached, cached):
        if result.first_error:
            print(f"\nfirst error of {result.name}: {result.first_error}")


if __name__ == "__main__":
    main()
