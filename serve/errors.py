"""The service's one error type and the handlers that turn errors into :class:`ErrorBody` JSON.

Every failure, including FastAPI's own validation errors and unknown routes, answers with the
same body (``error`` code + ``detail`` message), so clients need one code path.
"""

from __future__ import annotations

import re

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from .schemas import REQUEST_FIELDS, ErrorBody

_SUGGESTIONS = re.compile(r"did you mean (.+)\?$")


class ServiceError(Exception):
    """An HTTP error with a stable code and a message that says what is accepted."""

    def __init__(self, status: int, error: str, detail: str, *,
                 headers: dict[str, str] | None = None, suggestions: list[str] | None = None,
                 allowed: list[str] | None = None) -> None:
        super().__init__(detail)
        self.status, self.headers = status, headers
        self.body = ErrorBody(error=error, detail=detail, suggestions=suggestions,
                              allowed=allowed)

    def response(self) -> JSONResponse:
        return JSONResponse(self.body.model_dump(exclude_none=True), self.status, self.headers)


def suggestions_in(message: str) -> list[str] | None:
    """The close matches that ``graphs.UnknownArchitectureError`` lists ("did you mean a, b?")."""
    found = _SUGGESTIONS.search(message)
    return [name.strip() for name in found.group(1).split(",")] if found else None


def _validation_response(_: Request, exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        ctx = next(e for e in errors if e.get("type") == "json_invalid").get("ctx", {})
        return ServiceError(
            400, "malformed_json",
            f"the request body is not valid JSON ({ctx.get('error', 'parse error')}); send a JSON "
            f"object with the fields {', '.join(REQUEST_FIELDS)}").response()
    problems = "; ".join(
        f"{'.'.join(str(part) for part in e['loc'] if part != 'body') or 'body'}: {e['msg']}"
        for e in errors)
    if any(e["loc"][:1] == ("body",) for e in errors):
        problems += (f" (a request is a JSON object with the fields {', '.join(REQUEST_FIELDS)}; "
                     "see /docs)")
    return ServiceError(422, "invalid_request", problems).response()


def _http_response(_: Request, exc: HTTPException) -> JSONResponse:
    if exc.status_code == 400:  # FastAPI's only 400: a body it cannot decode (not UTF-8)
        return ServiceError(
            400, "malformed_json",
            f"the request body is not valid JSON (it is not UTF-8 text); send a JSON object "
            f"with the fields {', '.join(REQUEST_FIELDS)}").response()
    codes = {404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}
    return ServiceError(exc.status_code, codes.get(exc.status_code, f"http_{exc.status_code}"),
                        str(exc.detail), headers=exc.headers).response()


def _internal_response(_: Request, exc: Exception) -> JSONResponse:
    return ServiceError(500, "internal_error",
                        f"the server failed ({type(exc).__name__}); its log has the details"
                        ).response()


def install_handlers(app: FastAPI) -> None:
    """Route every error through :class:`ErrorBody` (unexpected ones too, as 500)."""
    app.add_exception_handler(Exception, _internal_response)
    app.add_exception_handler(ServiceError, lambda _, exc: exc.response())
    app.add_exception_handler(RequestValidationError, _validation_response)
    app.add_exception_handler(HTTPException, _http_response)
