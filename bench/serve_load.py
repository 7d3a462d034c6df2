"""Load benchmark of the HTTP service: throughput and latency of cached and uncached inits.

Run with ``.venv/bin/python bench/serve_load.py`` (``--help`` for the knobs).

It starts ``hyperinit serve`` (with the ``untrained`` generator and a fresh cache in a temp
folder) in a subprocess on a free loopback port, then drives it from ``--clients`` client
processes (each one ``httpx`` connection, requests one after another), so that client-side
Python and its GIL are not what is measured:

* **uncached**: requests for the same architecture with distinct seeds, so each one is a
  generation (they queue behind ``--max-concurrent`` generation slots);
* **cached**: one request repeated, answered from the disk cache after the first;
* **cached, curl one at a time**: the same request from ``curl`` (if installed), one
  process per request, its own ``time_total``: the reference a client sees;
* **cached, N curl loops**: ``--curl-loops`` such loops at once, so the service, not a
  Python client, is what the load measures.

Each workload is bounded both in requests (``--uncached``, ``--cached``) and in time
(``--max-seconds``: no request is started after that). It prints a markdown table with
throughput (requests/s and MB/s of safetensors sent) and p50/p99 latency per request.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
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


def client_requests(url: str, bodies: list[dict], deadline: float,
                    timeout: float) -> list[tuple[float, int, int, str]]:
    """Runs in a client process: POST ``bodies`` one after another on one connection, none
    started after ``deadline`` (``time.time()``); ``(seconds, status, bytes, error)`` each."""
    answers = []
    with httpx.Client(base_url=url, timeout=timeout) as client:
        for body in bodies:
            if time.time() > deadline:
                break
            t0 = time.perf_counter()
            response = client.post("/v1/inits", json=body)
            error = "" if response.status_code == 200 else response.text[:300]
            answers.append((time.perf_counter() - t0, response.status_code,
                            len(response.content), error))
    return answers


def run(url: str, name: str, bodies: list[dict], clients: int, max_seconds: float) -> Result:
    """POST every body from ``clients`` processes (round robin); none is started after
    ``max_seconds``."""
    result = Result(name)
    shares = [bodies[i::clients] for i in range(clients)]
    start = time.perf_counter()
    deadline = time.time() + max_seconds
    with multiprocessing.get_context("spawn").Pool(clients) as pool:
        answers = pool.starmap(client_requests,
                               [(url, share, deadline, 2 * max_seconds) for share in shares])
    result.wall = time.perf_counter() - start
    for seconds, status, nbytes, error in (a for share in answers for a in share):
        result.statuses[status] += 1
        if status == 200:
            result.latencies.append(seconds)
            result.nbytes += nbytes
        elif not result.first_error:
            result.first_error = f"{status} {error}"
    return result


def run_curl(url: str, body: dict, requests: int, max_seconds: float,
             loops: int = 1) -> Result | None:
    """The cached request from ``curl`` in ``loops`` concurrent loops, each one process per
    request after another; each answer's time is curl's own ``time_total`` (None without
    curl). No request is started after ``max_seconds``."""
    curl = shutil.which("curl")
    if curl is None:
        return None
    name = "cached, curl one at a time" if loops == 1 else f"cached, {loops} curl loops"
    result = Result(name)
    argv = [curl, "-s", "-o", os.devnull, "-w", "%{http_code} %{time_total} %{size_download}",
            "-H", "content-type: application/json", "-d", json.dumps(body), f"{url}/v1/inits"]
    start = time.perf_counter()
    lock = threading.Lock()

    def loop(count: int) -> None:
        for _ in range(count):
            if time.perf_counter() - start > max_seconds:
                return
            out = subprocess.run(argv, capture_output=True, text=True)
            status, seconds, nbytes = out.stdout.split()
            with lock:
                result.statuses[int(status)] += 1
                if status == "200":
                    result.latencies.append(float(seconds))
                    result.nbytes += int(float(nbytes))

    threads = [threading.Thread(target=loop, args=(len(range(i, requests, loops)),))
               for i in range(loops)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
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
    parser.add_argument("--clients", type=int, default=8, help="client processes")
    parser.add_argument("--curl", type=int, default=50,
                        help="cached requests from curl, one at a time (0: none)")
    parser.add_argument("--curl-loops", type=int, default=8,
                        help="concurrent curl loops of the last workload (0: none)")
    parser.add_argument("--curl-loop-requests", type=int, default=200,
                        help="cached requests of the concurrent curl loops, in all")
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
        url = f"http://127.0.0.1:{port}"
        try:
            with httpx.Client(base_url=url) as client:
                wait_ready(client, server, timeout=120)
            base = {"arch": args.arch, "num_classes": args.num_classes, "config": args.config}
            uncached = run(url, "uncached (distinct seeds)",
                           [{**base, "seed": 1000 + i} for i in range(args.uncached)],
                           args.clients, args.max_seconds)
            cached = run(url, "cached (same request)", [{**base, "seed": 1000}] * args.cached,
                         args.clients, args.max_seconds)
            cached_body = {**base, "seed": 1000}
            curl = run_curl(url, cached_body, args.curl, args.max_seconds) \
                if args.curl else None
            loops = run_curl(url, cached_body, args.curl_loop_requests, args.max_seconds,
                             args.curl_loops) if args.curl_loops else None
        finally:
            server.terminate()
            server.wait(30)
    classes = f" with {args.num_classes} classes" if args.num_classes else ""
    print(f"`python {' '.join(sys.argv)}`: {args.arch}{classes}, generator untrained, "
          f"{args.clients} client processes, "
          f"{args.max_concurrent} generation slot(s), {os.cpu_count()} CPUs\n")
    print("| " + " | ".join(COLUMNS) + " |")
    print("|" + "---|" * len(COLUMNS))
    results = [r for r in (uncached, cached, curl, loops) if r is not None]
    for result in results:
        print("| " + " | ".join(result.row()) + " |")
    for result in results:
        if result.first_error:
            print(f"\nfirst error of {result.name}: {result.first_error}")


if __name__ == "__main__":
    main()
