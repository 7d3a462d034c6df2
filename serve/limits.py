"""Request-body size limit, enforced before the body is parsed (413 above the limit).

A declared ``Content-Length`` over the limit is refused at once, without reading the body;
a body without one (chunked) is counted as it arrives and refused when it passes the limit.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import ServiceError


class BodyLimitMiddleware:
    """Refuses request bodies larger than ``max_bytes`` with 413."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    def _too_large(self, size: str) -> str:
        return (f"the request body has {size} bytes; this server accepts at most "
                f"{self.max_bytes:,} (an init request is a small JSON object)")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            response = ServiceError(413, "body_too_large",
                                    self._too_large(f"{int(declared):,}")).response()
            await response(scope, receive, send)
            return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                # Raised inside the route while it reads the body; FastAPI re-raises
                # HTTPException, and the handlers in errors.py answer 413.
                raise HTTPException(413, self._too_large(f"more than {self.max_bytes:,}"))
            return message

        await self.app(scope, counting_receive, send)
