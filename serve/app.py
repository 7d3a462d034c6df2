"""The FastAPI application: routes, auth, limits, and how an init is sent.

Endpoints (OpenAPI at ``/openapi.json``, browsable at ``/docs``):

* ``POST /v1/inits``: generate (or fetch from cache) the init of an architecture; answers
  the safetensors bytes with ``ETag`` = sha256 of the bytes.
* ``GET /v1/inits/{content_hash}``: a cached init by its hash; 404 if not cached.
* ``GET /v1/generators``: the generators requests may name.
* ``GET /healthz``, ``GET /metrics`` (Prometheus text): never need the token.
"""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Annotated, Any, BinaryIO

from fastapi import APIRouter, Depends, FastAPI, Header
from fastapi import Path as PathParam
from fastapi.responses import PlainTextResponse, Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

import hyperinit

from .config import ServeConfig
from .errors import ServiceError, install_handlers
from .limits import BodyLimitMiddleware
from .metrics import CONTENT_TYPE, Metrics, MetricsMiddleware
from .schemas import ErrorBody, GeneratorList, Health, InitRequest
from .service import InitService, Served

_CHUNK = 1 << 20
_HEX64 = r"^[0-9a-f]{64}$"
IfNoneMatch = Annotated[str | None, Header(
    description="An ETag from an earlier answer: 304 if it still matches.")]
_RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before retrying.",
                                "schema": {"type": "integer"}, "required": True}}


def _header_doc(description: str) -> dict[str, Any]:
    return {"description": description, "schema": {"type": "string"}, "required": True}


_INIT_OK = {
    "description": "The init as a safetensors file "
                   "(metadata: generator, arch, arch_hash, seed, noise, and task when one "
                   "was asked for).",
    "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    "headers": {
        "ETag": _header_doc("sha256 of the bytes, quoted; send it as If-None-Match."),
        "X-Arch-Hash": _header_doc("Structural hash of the architecture's graph."),
        "X-Generator": _header_doc("Generator name@revision that predicted the init."),
        "X-Cache": _header_doc("hit (from disk), shared (joined an identical generation in "
                               "progress) or miss (generated)."),
        "Content-Location": _header_doc("Where GET fetches this init again."),
    },
}
_NOT_MODIFIED = {"description": "If-None-Match matched: the client's copy is current.",
                 "headers": {"ETag": _header_doc("sha256 of the bytes, quoted.")}}


def _error(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = {"model": ErrorBody, "description": description}
    if headers:
        doc["headers"] = headers
    return doc


def _auth_responses(token: str | None) -> dict[int | str, dict[str, Any]]:
    if token is None:
        return {}
    return {401: _error("Missing or wrong bearer token.", {
        "WWW-Authenticate": _header_doc("Bearer, with error=\"invalid_token\" if wrong.")})}


Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(HTTPBearer(
    auto_error=False, description="The token given to `hyperinit serve`."))]


def _bearer_auth(token: str):
    """A dependency that requires ``Authorization: Bearer <token>`` (401 otherwise)."""

    def check(credentials: Credentials) -> None:
        if credentials is None:
            raise ServiceError(401, "unauthorized",
                               "this server needs the header 'Authorization: Bearer <token>'",
                               headers={"WWW-Authenticate": "Bearer"})
        if not hmac.compare_digest(credentials.credentials.encode(), token.encode()):
            raise ServiceError(401, "invalid_token", "the bearer token is wrong",
                               headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})

    return check


def _matches(if_none_match: str | None, etag: str) -> bool:
    if if_none_match is None:
        return False
    tags = [tag.strip().removeprefix("W/") for tag in if_none_match.split(",")]
    return "*" in tags or etag in tags


def _chunks(file: BinaryIO) -> Iterator[bytes]:
    with file:
        while chunk := file.read(_CHUNK):
            yield chunk


def _send(served: Served, if_none_match: str | None, *, immutable: bool) -> Response:
    """Stream an init from its checked, open cache file, or answer 304 if the client has it."""
    init = served.init
    etag = f'"{init.content_hash}"'
    headers = {"ETag": etag, "Content-Location": f"/v1/inits/{init.content_hash}"}
    if immutable:  # a content-addressed URL never changes
        headers["Cache-Control"] = "public, max-age=31536000, immutable"
    if _matches(if_none_match, etag):
        init.file.close()
        return Response(status_code=304, headers=headers)
    headers.update({
        "Content-Length": str(init.size),
        "Content-Disposition": f'attachment; filename="{init.content_hash[:16]}.safetensors"',
        "X-Arch-Hash": init.metadata.get("hyperinit.arch_hash", ""),
        "X-Generator": init.metadata.get("hyperinit.generator", ""),
        "X-Cache": served.cache,
    })
    return StreamingResponse(_chunks(init.file), media_type="application/octet-stream",
                             headers=headers)


def create_app(config: ServeConfig | None = None) -> FastAPI:
    """The service as a FastAPI app; loads the generators and opens the cache now."""
    config = config or ServeConfig()
    metrics = Metrics()
    service = InitService(config, metrics)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        service.close()

    app = FastAPI(
        title="hyperinit", version=hyperinit.__version__, lifespan=lifespan,
        description="Initial parameters for neural networks, predicted from their computational "
                    "graph by a learned generator, as safetensors files. Architectures are names "
                    "or transformers configs; the service never runs user code or unpickles "
                    "anything.")
    app.state.service = service
    install_handlers(app)
    app.add_middleware(BodyLimitMiddleware, max_bytes=config.max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=metrics)  # outermost: sees every status

    auth = [Depends(_bearer_auth(config.token))] if config.token else []
    v1 = APIRouter(prefix="/v1", dependencies=auth, responses=_auth_responses(config.token))

    @v1.post("/inits", response_class=Response, summary="Generate or fetch an init", responses={
        200: _INIT_OK, 304: _NOT_MODIFIED,
        400: _error("The body is not JSON."),
        413: _error("The body is larger than the server accepts."),
        422: _error("Invalid request: unknown architecture (with suggestions) or generator "
                    "(with the allowed ones), refused spec, more parameters than allowed, or a "
                    "task the generator cannot take (`invalid_task`, with the generators "
                    "that take one)."),
        429: _error("Too many generations running or queued.", _RETRY_AFTER),
        503: _error("The request (resolving, reading the cache, generating) did not finish "
                    "within the request timeout.", _RETRY_AFTER),
        507: _error("The server's cache disk is full: the init cannot be stored.", _RETRY_AFTER),
    })
    async def create_init(request: InitRequest,
                          if_none_match: IfNoneMatch = None) -> Response:
        """The init of `arch`, predicted by `generator` with `seed` and `noise` (for `task`,
        if the generator is conditioned on tasks).

        Identical requests (same architecture, options, generator, seed, noise, dtype and task)
        get the same bytes: from the disk cache if generated before, or by joining a
        generation in progress.
        """
        return _send(await service.serve(request), if_none_match, immutable=False)

    @v1.get("/inits/{content_hash}", response_class=Response, summary="Fetch a cached init",
            responses={200: _INIT_OK, 304: _NOT_MODIFIED,
                       404: _error("No cached init has this hash.")})
    async def get_init(
            content_hash: Annotated[str, PathParam(pattern=_HEX64,
                                                   description="sha256 of the init (its ETag).")],
            if_none_match: IfNoneMatch = None) -> Response:
        """A previously generated init by its content hash, while it is in the cache."""
        init = await run_in_threadpool(service.cache.open, content_hash)
        if init is None:
            raise ServiceError(404, "not_cached",
                               f"no cached init has the hash {content_hash} (it was never "
                               "generated here, was evicted, or was found damaged and "
                               "dropped): POST /v1/inits to generate it")
        return _send(Served(init, "hit"), if_none_match, immutable=True)

    @v1.get("/generators", summary="List generators")
    async def list_generators() -> GeneratorList:
        """The generators a request may name in `generator`, and which one is the default."""
        return GeneratorList.model_validate({"generators": service.generators.describe()})

    app.include_router(v1)

    @app.get("/healthz", summary="Liveness")
    async def healthz() -> Health:
        return Health(version=hyperinit.__version__, generations_in_flight=service.in_flight,
                      cache_entries=len(service.cache), cache_bytes=service.cache.total_bytes)

    @app.get("/metrics", response_class=PlainTextResponse, summary="Prometheus metrics",
             responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}})
    async def metrics_page() -> PlainTextResponse:
        """Counters, gauges and the generation-time histogram in Prometheus text format."""
        text = metrics.render({
            "generations_in_flight": ("gauge", "Generations running or queued.",
                                      service.in_flight),
            "cache_bytes": ("gauge", "Bytes of inits in the disk cache.",
                            service.cache.total_bytes),
            "cache_entries": ("gauge", "Inits in the disk cache.", len(service.cache)),
            "cache_evictions_total": ("counter", "Inits evicted to keep the cache in its bound.",
                                      service.cache.evictions),
            "cache_damaged_total": ("counter", "Cached inits found missing or damaged (when "
                                    "opened, or at start) and dropped; their requests were "
                                    "generated again.", service.cache.damaged),
            "cache_hashed_total": ("counter", "Cached inits hashed in full when opened to be "
                                   "sent (the others had not changed since a settled check).",
                                   service.cache.hashed),
        })
        return PlainTextResponse(text, media_type=CONTENT_TYPE)

    return app
