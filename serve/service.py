"""From a validated request to a cached init: resolve, admit, generate once, cache.

* :func:`resolve_arch` turns the request's architecture into a ``graphs.ArchSpec`` without
  ever importing user code or reading server files (``python:`` specs and ``hf:`` paths are
  refused).
* :class:`InitService` looks the request up in the :class:`~serve.cache.InitCache`; on a miss
  it starts one generation per distinct request (identical concurrent requests share it),
  runs it in a thread pool of ``max_concurrent`` workers, refuses new work beyond
  ``max_concurrent + queue_limit`` (429), and stops waiting after ``request_timeout_s`` (503;
  the generation finishes into the cache anyway).
* Before generating, the architecture's size is checked against ``max_params`` with
  :func:`graphs.check_size`: on small ``meta`` builds, never a full build of a declared size,
  so a config with a million layers is refused in milliseconds (``graphs/size.py``).
"""

from __future__ import annotations

import asyncio
import difflib
import logging
import threading
import time
from collections.abc import Awaitable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

from starlette.concurrency import run_in_threadpool

import graphs
import hyperinit
from graphs import ArchitectureTooLargeError, ArchSpec, GraphBuildError, UnknownArchitectureError
from graphs.specs import HF_SIZES
from hyperinit.errors import TaskError
from hyperinit.predict import InitTask, resolve_noise, resolve_task

from .cache import CachedInit, InitCache, request_key
from .config import ServeConfig
from .errors import ServiceError, suggestions_in
from .generators import GeneratorSet, LoadedGenerator
from .metrics import Metrics
from .schemas import InitRequest

log = logging.getLogger("serve")
T = TypeVar("T")
RESERVED_CONFIG_KEYS = ("num_classes", "spec")
# Constructor options that load weights or read files (timm's checkpoint_path would even
# torch.load a server file). Refused unless null: the service predicts weights, never loads.
WEIGHT_OPTIONS = ("weights", "weights_backbone", "pretrained", "pretrained_cfg",
                  "pretrained_cfg_overlay", "checkpoint_path", "cache_dir")


@dataclass(frozen=True)
class InitJob:
    """A resolved request: everything that determines the init's bytes, and its cache key."""

    spec: ArchSpec
    generator: LoadedGenerator
    seed: int
    noise: float
    dtype: str | None
    task: InitTask | None
    key: str


@dataclass
class Served:
    """An init ready to send: the checked, open cache file, and whether it came from cache."""

    init: CachedInit
    cache: str  # "hit", "miss" or "shared"


def _retrieve(task: asyncio.Future) -> None:
    """Read a task's outcome even if every waiter timed out, so asyncio logs no "exception
    was never retrieved"."""
    if not task.cancelled():
        task.exception()


def _refuse(detail: str, error: str = "architecture_not_allowed") -> ServiceError:
    return ServiceError(422, error, detail)


def _check_hf_name(name: str) -> None:
    """Only known model types: ``graphs`` would read any other name as a local path."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    known = [*CONFIG_MAPPING.keys(), *HF_SIZES]
    if name in known:
        return
    if "/" in name or "\\" in name or name.endswith(".json") or name.startswith("."):
        raise _refuse(f"hf:{name} looks like a path: the service reads no files; send the "
                      "transformers config itself as a JSON object in 'arch' (with 'model_type')")
    close = difflib.get_close_matches(name, known, n=5, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else f"; {len(known)} are known"
    raise UnknownArchitectureError(f"unknown transformers model type {name!r}{hint}")


def resolve_arch(request: InitRequest) -> ArchSpec:
    """The request's architecture as a spec; 422 with suggestions if it names nothing known."""
    arch, overrides = request.arch, dict(request.config)
    if isinstance(arch, dict):
        fields = dict(arch)
        model_type = fields.pop("model_type", None)
        if not isinstance(model_type, str) or not model_type:
            raise _refuse("an 'arch' object is a transformers config and needs a 'model_type' "
                          "string, e.g. {\"model_type\": \"gpt2\", \"n_layer\": 4}; or send a "
                          "spec string like 'torchvision:resnet18'", "invalid_architecture")
        arch, overrides = f"hf:{model_type}", {**fields, **overrides}
    reserved = sorted(set(overrides) & set(RESERVED_CONFIG_KEYS))
    if reserved:
        raise _refuse(f"config keys {reserved} are reserved: give the classifier size as the "
                      "top-level 'num_classes'", "invalid_request")
    loading = sorted(k for k in WEIGHT_OPTIONS if overrides.get(k) is not None)
    if loading:
        raise _refuse(f"config options {loading} load weights or files, which this service "
                      "never does (it predicts the weights); leave them out or null",
                      "options_not_allowed")
    source, _, name = arch.partition(":")
    if source == "python":
        raise _refuse("python: specs import code, which this service never does: send a "
                      "torchvision:, hf: or timm: spec, or a transformers config object")
    try:
        if source == "hf":
            _check_hf_name(name)
        return graphs.resolve(arch, num_classes=request.num_classes, **overrides)
    except UnknownArchitectureError as err:
        raise ServiceError(422, "unknown_architecture", str(err),
                           suggestions=suggestions_in(str(err))) from err
    except GraphBuildError as err:  # options graphs.resolve refuses
        raise ServiceError(422, "invalid_architecture", str(err)) from err


# transformers' lazy module is not thread-safe: two threads that touch a name for the first
# time can both fail with ImportError. Model classes are first touched when a model is built,
# and every request's first build is the size check, so size checks take turns.
_first_build_lock = threading.Lock()


def _import_transformers() -> None:
    """Import, in one thread, the transformers names that request threads resolve specs with."""
    from transformers import CONFIG_MAPPING, AutoConfig  # noqa: F401
    from transformers.models.auto import configuration_auto, modeling_auto  # noqa: F401


class InitService:
    """The cache, the generators and the bounded generation pool behind ``/v1/inits``."""

    def __init__(self, config: ServeConfig, metrics: Metrics) -> None:
        self.config, self.metrics = config, metrics
        _import_transformers()
        self.generators = GeneratorSet(config.generators, config.default_generator)
        self.cache = InitCache(config.cache_dir, config.cache_max_bytes)
        self._pool = ThreadPoolExecutor(config.max_concurrent, thread_name_prefix="generate")
        self._flights: dict[str, asyncio.Task[str]] = {}
        self.in_flight = 0  # generations admitted and not finished; event-loop thread only

    def job(self, request: InitRequest) -> InitJob:
        """Resolve a request (cheap: names and configs only, no model is built)."""
        generator = self.generators.get(request.generator)
        spec = resolve_arch(request)
        noise = resolve_noise(generator.model, request.noise)
        task = self._task(generator, request.task)
        fields = {"arch": spec.canonical(), "generator": generator.id, "seed": request.seed,
                  "noise": noise, "dtype": request.dtype, "hyperinit": hyperinit.__version__}
        if task is not None:  # requests without a task keep the keys they always had
            fields["task"] = task.to_json()
        return InitJob(spec, generator, request.seed, noise, request.dtype, task,
                       request_key(fields))

    def _task(self, generator: LoadedGenerator, task: list[float] | str | None,
              ) -> InitTask | None:
        """The request's task checked against its generator; 422 ``invalid_task`` saying
        what was wrong and listing this server's generators that take a task."""
        try:
            return resolve_task(generator.model, task)
        except TaskError as err:
            taking = self.generators.taking_tasks()
            raise ServiceError(422, "invalid_task",
                               f"{err}. Generators of this server that take a task: "
                               f"{', '.join(taking) or 'none'}",
                               allowed=taking) from err

    async def serve(self, request: InitRequest) -> Served:
        """The init for ``request``: from cache, from a generation in progress, or generated.

        Every step (resolving the request, reading the cache, generating) runs within
        ``request_timeout_s`` from the start, else 503; none of them is cancelled by it.
        """
        deadline = time.monotonic() + self.config.request_timeout_s
        job = await self._within(deadline, run_in_threadpool(self.job, request),
                                 "resolving the request")
        cached = await self._within(deadline, run_in_threadpool(self.cache.lookup, job.key),
                                    "reading the cache")
        if cached is not None:
            self.metrics.count_cache("hit")
            return Served(cached, "hit")
        flight = self._flights.get(job.key)
        outcome = "shared" if flight is not None else "miss"
        if flight is None:
            flight = self._start(job)
        self.metrics.count_cache(outcome)
        content = await self._within(  # raises the generation's ServiceError, if any
            deadline, flight, f"generating {job.spec.label}",
            "it goes on in the background: retry the same request later")
        init = await self._within(deadline, run_in_threadpool(self.cache.open, content),
                                  "reading the cache")
        if init is None:
            raise ServiceError(503, "evicted",
                               "the init was evicted or damaged before it could be sent (the "
                               "cache is too small for this load, or its disk fails): retry",
                               headers={"Retry-After": str(self.config.retry_after_s)})
        return Served(init, outcome)

    async def _within(self, deadline: float, step: Awaitable[T], what: str,
                      then: str = "retry later") -> T:
        """The result of ``step``, or 503 once ``deadline`` passes. ``asyncio.wait`` never
        cancels the step: a generation goes on for the other waiters and the cache."""
        task = asyncio.ensure_future(step)
        done, _ = await asyncio.wait({task}, timeout=max(0.0, deadline - time.monotonic()))
        if not done:
            task.add_done_callback(_retrieve)
            raise ServiceError(
                503, "timeout",
                f"{what} took longer than {self.config.request_timeout_s:g} s; {then}",
                headers={"Retry-After": str(self.config.retry_after_s)})
        return task.result()

    def _start(self, job: InitJob) -> asyncio.Task[str]:
        limit = self.config.max_concurrent + self.config.queue_limit
        if self.in_flight >= limit:
            raise ServiceError(
                429, "busy",
                f"{self.in_flight} generations are running or queued (the limit is {limit}); "
                "retry later, or request an init that is already cached",
                headers={"Retry-After": str(self.config.retry_after_s)})
        self.in_flight += 1
        task = asyncio.get_running_loop().create_task(self._run(job))
        task.add_done_callback(_retrieve)
        self._flights[job.key] = task
        return task

    async def _run(self, job: InitJob) -> str:
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, self._generate,
                                                                    job)
        finally:
            self.in_flight -= 1
            del self._flights[job.key]

    def _check_size(self, spec: ArchSpec) -> None:
        """422 if ``spec`` has more than ``max_params`` parameters or ``graphs.size``'s module
        limit, found without building it in full (milliseconds for any declared size)."""
        try:
            with _first_build_lock:
                graphs.check_size(spec, self.config.max_params)
        except ArchitectureTooLargeError as err:
            raise ServiceError(422, "too_many_parameters", f"{err} on this server") from err

    def _generate(self, job: InitJob) -> str:
        """Check the size, generate into ``tmp/``, move into the cache (a pool thread)."""
        try:
            self._check_size(job.spec)
            path = self.cache.temp_path()
            start = time.perf_counter()
            hyperinit.save_init(job.spec, path, job.generator.model, seed=job.seed,
                                noise=job.noise, dtype=job.dtype, task=job.task)
            self.metrics.observe_generation(time.perf_counter() - start)
            return self.cache.put(job.key, path)
        except ServiceError:
            raise
        except GraphBuildError as err:
            raise ServiceError(422, "invalid_architecture", str(err)) from err
        except hyperinit.GeneratorLimitError as err:
            raise ServiceError(422, "too_large_for_generator", str(err)) from err
        except hyperinit.DiskFullError as err:
            log.error("generating %s: %s", job.spec.label, err)
            raise ServiceError(
                507, "insufficient_storage",
                f"the server's cache disk is full, so the init of {job.spec.label} cannot be "
                "stored (nothing was kept): retry later, once its operator has freed space or "
                "lowered --cache-max-bytes",
                headers={"Retry-After": str(self.config.retry_after_s)}) from err
        except Exception as err:
            log.exception("generating %s failed", job.spec.label)
            raise ServiceError(500, "generation_failed",
                               f"generating {job.spec.label} failed ({type(err).__name__}); the "
                               "server log has the details") from err

    def close(self) -> None:
        """Stop taking work; generations already running finish in their threads."""
        self._pool.shutdown(wait=False, cancel_futures=True)
