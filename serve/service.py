"""From a validated request to a cached init: resolve, admit, generate once, cache.

* :func:`resolve_arch` turns the request's architecture into a ``graphs.ArchSpec`` without
  ever importing user code or reading server files (``python:`` specs and ``hf:`` paths are
  refused).
* :class:`InitService` looks the request up in the :class:`~serve.cache.InitCache`; on a miss
  it starts one generation per distinct request (identical concurrent requests share it),
  runs it in a thread pool of ``max_concurrent`` workers, refuses new work beyond
  ``max_concurrent + queue_limit`` (429), and stops waiting after ``request_timeout_s`` (503;
  the generation finishes into the cache anyway).
* Before generating, the architecture's parameter count is checked against ``max_params`` on
  a model built on the ``meta`` device: no memory and no trace, even for absurd sizes. That
  build itself runs under a budget (:func:`construction_budget`), so a config with a million
  layers is stopped early instead of filling memory with module objects.
"""

from __future__ import annotations

import asyncio
import difflib
import logging
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import BinaryIO

import torch
from torch.nn.modules import module as torch_module

import graphs
import hyperinit
from graphs import ArchSpec, GraphBuildError, UnknownArchitectureError
from graphs.specs import HF_SIZES
from hyperinit.predict import resolve_noise

from .cache import InitCache, request_key
from .config import ServeConfig
from .errors import ServiceError, suggestions_in
from .generators import GeneratorSet, LoadedGenerator
from .metrics import Metrics
from .schemas import InitRequest

log = logging.getLogger("serve")
RESERVED_CONFIG_KEYS = ("num_classes", "spec")
# Constructor options that load weights or read files (timm's checkpoint_path would even
# torch.load a server file). Refused unless null: the service predicts weights, never loads.
WEIGHT_OPTIONS = ("weights", "weights_backbone", "pretrained", "pretrained_cfg",
                  "pretrained_cfg_overlay", "checkpoint_path", "cache_dir")
# Submodules a model may register while it is built: the largest real models have a few
# thousand (an 8x60-layer mixture of experts about 25k), so this only stops absurd configs.
MAX_MODULES = 100_000


@dataclass(frozen=True)
class InitJob:
    """A resolved request: everything that determines the init's bytes, and its cache key."""

    spec: ArchSpec
    generator: LoadedGenerator
    seed: int
    noise: float
    dtype: str | None
    key: str


@dataclass
class Served:
    """An init ready to send: its content hash, open file, and whether it came from cache."""

    content_hash: str
    file: BinaryIO
    cache: str  # "hit", "miss" or "shared"


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


class OverBudget(Exception):
    """A model being built registered more tensor elements or modules than allowed.

    Not a ``ValueError``, so ``ArchSpec.build`` lets it through instead of wrapping it.
    """


_budget = threading.local()  # .elements and .modules left to the build in this thread
_hooks_lock = threading.Lock()
_hooks: list = []
# transformers' lazy module is not thread-safe: two threads that touch a name for the first
# time can both fail with ImportError. Model classes are first touched when a model is built,
# and every request's first build is the size check, so size checks take turns.
_first_build_lock = threading.Lock()


def _import_transformers() -> None:
    """Import, in one thread, the transformers names that request threads resolve specs with."""
    from transformers import CONFIG_MAPPING, AutoConfig  # noqa: F401
    from transformers.models.auto import configuration_auto, modeling_auto  # noqa: F401


def _charge(elements: int, modules: int) -> None:
    if getattr(_budget, "elements", None) is None:
        return  # not building under a budget in this thread
    _budget.elements -= elements
    _budget.modules -= modules
    if _budget.elements < 0 or _budget.modules < 0:
        raise OverBudget


def _on_tensor(module, name, tensor) -> None:
    if tensor is not None:
        _charge(tensor.numel(), 0)


def _on_module(module, name, submodule) -> None:
    if submodule is not None:
        _charge(0, 1)


@contextmanager
def construction_budget(elements: int, modules: int = MAX_MODULES) -> Iterator[None]:
    """Raise :class:`OverBudget` as soon as models built in this thread register more than
    ``elements`` parameter/buffer elements or ``modules`` submodules.

    Uses torch's global registration hooks (installed once), which charge only threads
    inside this context.
    """
    with _hooks_lock:
        if not _hooks:
            _hooks.extend([
                torch_module.register_module_parameter_registration_hook(_on_tensor),
                torch_module.register_module_buffer_registration_hook(_on_tensor),
                torch_module.register_module_module_registration_hook(_on_module),
            ])
    _budget.elements, _budget.modules = elements, modules
    try:
        yield
    finally:
        _budget.elements = _budget.modules = None


def count_parameters(spec: ArchSpec, max_params: int) -> int:
    """Scalar parameters of ``spec`` (tied ones once), from a model built on ``meta``.

    Everything is built on ``meta`` so even a classifier with 10**9 classes costs nothing. A
    few models compute buffers from data at construction (torchvision's RegNets); they are
    built the ordinary way (parameters on ``meta``, buffers real). Either build stops with
    :class:`OverBudget` past twice ``max_params`` elements (parameters and buffers, tied
    ones as often as they are registered) or :data:`MAX_MODULES` modules.
    """
    try:
        try:
            with construction_budget(2 * max_params), torch.device("meta"):
                module = spec.build()
        except (NotImplementedError, RuntimeError):
            with construction_budget(2 * max_params):
                module = spec.build()
    except (GraphBuildError, UnknownArchitectureError, OverBudget):
        raise
    except Exception as err:  # any constructor failure comes from the request's options
        raise GraphBuildError(f"cannot build {spec.label} with options {spec.kwargs}: "
                              f"{type(err).__name__}: {err}") from err
    return sum(p.numel() for p in module.parameters())


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
        key = request_key({"arch": spec.canonical(), "generator": generator.id,
                           "seed": request.seed, "noise": noise, "dtype": request.dtype,
                           "hyperinit": hyperinit.__version__})
        return InitJob(spec, generator, request.seed, noise, request.dtype, key)

    async def serve(self, job: InitJob) -> Served:
        """The init for ``job``: from cache, from a generation in progress, or generated."""
        cached = self.cache.lookup(job.key)
        if cached is not None:
            self.metrics.count_cache("hit")
            return Served(*cached, "hit")
        flight = self._flights.get(job.key)
        outcome = "shared" if flight is not None else "miss"
        if flight is None:
            flight = self._start(job)
        self.metrics.count_cache(outcome)
        # asyncio.wait never cancels the generation: on timeout (or if this request is
        # cancelled) it goes on for the other waiters and the cache.
        done, _ = await asyncio.wait({flight}, timeout=self.config.request_timeout_s)
        if not done:
            raise ServiceError(
                503, "timeout",
                f"generating {job.spec.label} took longer than {self.config.request_timeout_s:g} "
                "s; it goes on in the background: retry the same request later",
                headers={"Retry-After": str(self.config.retry_after_s)})
        content = flight.result()  # raises the generation's ServiceError, if any
        file = self.cache.open(content)
        if file is None:
            raise ServiceError(503, "evicted",
                               "the init was evicted before it could be sent (the cache is too "
                               "small for this load): retry",
                               headers={"Retry-After": str(self.config.retry_after_s)})
        return Served(content, file, outcome)

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
        # Read the outcome even if every waiter timed out, so asyncio logs no "never retrieved".
        task.add_done_callback(lambda t: t.cancelled() or t.exception())
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
        """422 if ``spec`` has more parameters than ``max_params`` (or is absurdly large)."""
        limit = self.config.max_params
        try:
            with _first_build_lock:
                params = count_parameters(spec, limit)
        except OverBudget:
            size = f"more than {limit:,} parameters or {MAX_MODULES:,} modules (building stopped)"
        else:
            if params <= limit:
                return
            size = f"{params:,} parameters"
        raise ServiceError(422, "too_many_parameters",
                           f"{spec.label} with options {spec.kwargs} has {size}; this server "
                           f"generates inits of at most {limit:,} parameters")

    def _generate(self, job: InitJob) -> str:
        """Check the size, generate into ``tmp/``, move into the cache (a pool thread)."""
        try:
            self._check_size(job.spec)
            path = self.cache.temp_path()
            start = time.perf_counter()
            hyperinit.save_init(job.spec, path, job.generator.model, seed=job.seed,
                                noise=job.noise, dtype=job.dtype)
            self.metrics.observe_generation(time.perf_counter() - start)
            return self.cache.put(job.key, path)
        except ServiceError:
            raise
        except GraphBuildError as err:
            raise ServiceError(422, "invalid_architecture", str(err)) from err
        except hyperinit.GeneratorLimitError as err:
            raise ServiceError(422, "too_large_for_generator", str(err)) from err
        except Exception as err:
            log.exception("generating %s failed", job.spec.label)
            raise ServiceError(500, "generation_failed",
                               f"generating {job.spec.label} failed ({type(err).__name__}); the "
                               "server log has the details") from err

    def close(self) -> None:
        """Stop taking work; generations already running finish in their threads."""
        self._pool.shutdown(wait=False, cancel_futures=True)
