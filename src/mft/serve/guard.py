"""What `mft serve` checks before a request reaches a route: the API key (401, every route, constant-time
compare) and the body size (413, counted while the body is read, so a chunked body without a length is
held to it too). Each refusal is an error reply in OpenAI's shape, sent by the ASGI middleware `Guard`."""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

from mft.serve.schemas import ApiError


@dataclass(frozen=True)
class Limits:
    """What `mft serve` accepts: see `serve()` for the command-line names."""

    api_key: str | None = None  # None: no authentication (loopback only is the default bind)
    max_body_bytes: int = 4 * 2**20
    request_timeout_s: float = 600.0
    max_batch: int = 64  # requests batched together (1: one at a time)


Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


async def _send_error(send: Send, err: ApiError, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    data = json.dumps(err.body()).encode()
    head = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    await send({"type": "http.response.start", "status": err.status, "headers": [*head, *(headers or [])]})
    await send({"type": "http.response.body", "body": data})


class Guard:
    """ASGI middleware in front of every route: the API key (401) and the body size (413)."""

    def __init__(self, app: ASGIApp, limits: Limits) -> None:
        self.app, self.limits = app, limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        key = self.limits.api_key
        if key is not None:
            given = headers.get("authorization", "")
            token = given[7:].strip() if given[:7].lower() == "bearer " else ""
            if not hmac.compare_digest(token.encode(), key.encode()):
                err = ApiError(
                    401,
                    "missing or incorrect API key: send it as the header 'Authorization: Bearer <key>'",
                    "invalid_request_error",
                    "invalid_api_key",
                )
                await _send_error(send, err, [(b"www-authenticate", b"Bearer")])
                return
        limit = self.limits.max_body_bytes
        too_large = ApiError(
            413,
            f"the request body is over the server's limit of {limit} bytes (mft serve --max-body-mb)",
            "invalid_request_error",
            "request_too_large",
        )
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > limit:
            await _send_error(send, too_large)
            return
        if scope.get("method") not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        # read the body here, counting (a chunked body has no content-length), then hand it on
        chunks, seen = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunk = message.get("body", b"")
            seen += len(chunk)
            if seen > limit:
                await _send_error(send, too_large)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body: list[MutableMapping[str, Any]] = [{"type": "http.request", "body": b"".join(chunks)}]

        async def replay() -> MutableMapping[str, Any]:
            return body.pop() if body else await receive()

        await self.app(scope, replay, send)
