"""Pure ASGI middleware that checks the bearer token and the body size before the app reads a byte.

A FastAPI dependency runs only after the body has been parsed, so an unauthenticated client
could make the server spool a whole upload before hearing 401. This middleware answers 401 from
the request headers alone, and counts body bytes as they stream (with or without a
``Content-Length``), answering 413 as soon as the cap is passed: the rest is never read.
Modelled on Starlette's ``RequestBodyLimitMiddleware``, but answering the server's JSON errors.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Collection

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class _BodyTooLarge(Exception):
    """Raised into the app by ``receive`` once the body passes the cap."""


async def send_json_error(send: Send, status: int, message: str, headers: dict[str, str] | None = None) -> None:
    """Send a complete ``{"error": message, "detail": message}`` response on a raw ASGI ``send``."""
    body = json.dumps({"error": message, "detail": message}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


class RequestGuard:
    """Refuse unauthenticated requests (401) and bodies larger than ``max_body_bytes`` (413).

    Args:
        app: the ASGI app to guard.
        token: the bearer token every request but those to ``open_paths`` must carry
            (``Authorization: Bearer TOKEN``); None for no authentication.
        max_body_bytes: the largest request body, counted as it streams.
        open_paths: paths served without a token.
        limit_text: the limit as the 413 answer names it (default ``max_body_bytes`` in MiB), e.g.
            the upload limit a user set rather than the body limit that includes the envelope.

    Example:
        >>> from fastapi import FastAPI
        >>> api = FastAPI()
        >>> api.add_middleware(RequestGuard, token="s3cret", max_body_bytes=2**20, open_paths={"/auth/"})
    """

    def __init__(self, app: ASGIApp, token: str | None, max_body_bytes: int, open_paths: Collection[str] = (), limit_text: str | None = None) -> None:
        self.app, self.token, self.max_body_bytes, self.open_paths = app, token, max_body_bytes, frozenset(open_paths)
        self.limit_text = limit_text or f"{max_body_bytes / 2**20:.1f} MiB"

    def _authorised(self, scope: Scope) -> bool:
        if not self.token or scope["path"] in self.open_paths:
            return True
        given = Headers(scope=scope).get("authorization", "")
        return hmac.compare_digest(given.encode(), f"Bearer {self.token}".encode())

    def _too_large_message(self, size: str) -> str:
        return f"request body of {size} is larger than the server's limit ({self.limit_text})"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if not self._authorised(scope):
            await send_json_error(send, 401, "missing or wrong bearer token (send 'Authorization: Bearer TOKEN')", {"WWW-Authenticate": "Bearer"})
            return
        length = Headers(scope=scope).get("content-length", "")
        if length.isdigit() and int(length) > self.max_body_bytes:
            await send_json_error(send, 413, self._too_large_message(f"{int(length) / 2**20:.1f} MiB"))
            return
        await self._guarded(scope, receive, send)

    async def _guarded(self, scope: Scope, receive: Receive, send: Send) -> None:
        received, exceeded, started = 0, False, False

        async def counting_receive() -> Message:
            nonlocal received, exceeded
            if exceeded:
                raise _BodyTooLarge
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    exceeded = True
                    raise _BodyTooLarge
            return message

        async def checked_send(message: Message) -> None:
            nonlocal started
            if exceeded:
                return  # whatever the app made of the interrupted body, the answer is 413
            started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, checked_send)
        except Exception:
            if not exceeded or started:
                raise
        if exceeded and not started:
            await send_json_error(send, 413, self._too_large_message(f"more than {self.max_body_bytes / 2**20:.1f} MiB (chunked)"))
