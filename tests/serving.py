"""A real service for tests: uvicorn on 127.0.0.1 (a free port) in a thread, an httpx client,
and the small requests the service tests send."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import uvicorn

from serve import ServeConfig, create_app
from serve.service import InitService

ROOT = Path(__file__).resolve().parents[1]

TINY_GPT2 = {"n_layer": 1, "n_embd": 64, "n_head": 2, "vocab_size": 256, "n_positions": 64,
             "bos_token_id": 0, "eos_token_id": 0}
RESNET18 = {"arch": "torchvision:resnet18", "num_classes": 10}


def gpt2(seed: int = 0) -> dict:
    """A tiny GPT-2 request; with some noise, each seed is its own init (other bytes)."""
    return {"arch": "hf:gpt2", "config": TINY_GPT2, "seed": seed, "noise": 0.1}


@dataclass
class Server:
    client: httpx.Client
    service: InitService
    url: str


@contextmanager
def running(config: ServeConfig, headers: dict[str, str] | None = None) -> Iterator[Server]:
    """The app served by uvicorn on a free loopback port, for the duration of the block."""
    app = create_app(config)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started or not thread.is_alive())
    assert server.started, "uvicorn did not start"
    url = f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    try:
        with httpx.Client(base_url=url, timeout=120, headers=headers) as client:
            yield Server(client, app.state.service, url)
    finally:
        server.should_exit = True
        thread.join(30)


def wait_until(condition: Callable[[], bool], timeout: float = 60) -> None:
    """Poll a condition (not a sleep that hopes for the best): fails after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting for the server"
        time.sleep(0.01)


def config(tmp_path: Path, **overrides) -> ServeConfig:
    options = {"generators": ("untrained",), "cache_dir": tmp_path / "cache",
               "max_params": 20_000_000, **overrides}
    return ServeConfig(**options)


def metric(server: Server, line_start: str) -> float:
    text = server.client.get("/metrics").text
    values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
              if line.startswith(line_start)]
    assert values, f"no metric {line_start} in\n{text}"
    return sum(values)


@dataclass
class Process:
    """A ``hyperinit serve`` process and a client of it."""

    popen: subprocess.Popen
    client: httpx.Client


@contextmanager
def serve_process(*options: str, prefix: tuple[str, ...] = ()) -> Iterator[Process]:
    """``hyperinit serve OPTIONS`` on a free loopback port (run through ``prefix``, e.g. a
    namespace with its own mounts), once it answers ``/healthz``; stopped after the block."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [*prefix, sys.executable, "-m", "hyperinit.cli", "serve", "--port", str(port),
               "--log-level", "warning", *options]
    popen = subprocess.Popen(command, cwd=ROOT)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120) as client:
            def ready() -> bool:
                assert popen.poll() is None, "hyperinit serve exited"
                try:
                    return client.get("/healthz").status_code == 200
                except httpx.TransportError:
                    return False

            wait_until(ready, timeout=120)
            yield Process(popen, client)
    finally:
        popen.terminate()
        popen.wait(30)
