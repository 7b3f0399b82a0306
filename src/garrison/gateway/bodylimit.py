"""Request size caps (E4): 413 before a body is read whole, whether or not it declares a length.

The cap is per route: ``RouteDef.max_body_bytes`` for the longest matching route prefix,
``BUS_MAX_BYTES`` under ``/system/``, else ``GARRISON_MAX_BODY_BYTES``. A ``Content-Length`` over the
cap is refused before the application runs. A chunked body is counted as it arrives through the
wrapped ``receive``, and the first chunk that crosses the cap ends the request with 413 (or, when
the response has already started, an aborted response) — the application never holds more than one
chunk past the cap.

Any answer given before the body was read to its end (that 413, a 401 or 403 of the proxy, a 429)
is followed by ``drop_unread``: up to ``DRAIN_BYTES`` more of the body, for at most
``DRAIN_SECONDS``, are read and dropped, never kept. A proxy that streams the upload to Garrison
(nginx with ``proxy_request_buffering off``, Caddy) would otherwise meet the connection closed
under its upload and answer 502 instead of passing the answer on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from garrison.config.settings import RouteDef
from garrison.errors import BadRequestError, PayloadTooLargeError
from garrison.gateway.raw import header, send_error
from garrison.paths import canonical_path, covers, route_prefix

SYSTEM_PREFIX = "/system/"
#: The most of a refused body read (and dropped) so that the proxy sending it reads the answer.
DRAIN_BYTES = 16 * 1024 * 1024
DRAIN_SECONDS = 2.0


class BodyCaps:
    """The cap that applies to a path (longest prefix wins)."""

    def __init__(self, default: int, bus_max: int, routes: Iterable[RouteDef]) -> None:
        self.default = default
        caps = [
            (route_prefix(r.prefix), r.case_insensitive, r.max_body_bytes)
            for r in routes
            if r.max_body_bytes is not None
        ]
        caps.append((route_prefix(SYSTEM_PREFIX), False, bus_max))
        self._caps = sorted(caps, key=lambda item: -len(item[0]))

    def for_path(self, path: str) -> int:
        """The cap of a canonical path; a case-insensitive route's cap also covers ``/UPLOAD``."""
        for prefix, case_insensitive, cap in self._caps:
            if covers(prefix, path) or (case_insensitive and covers(prefix.lower(), path.lower())):
                return cap
        return self.default

    def for_scope(self, scope: Scope) -> int:
        """The cap of the canonical path (the one the proxy serves), so ``//upload`` or
        ``/x/../upload`` get ``/upload``'s cap; a path with no canonical form gets the smallest."""
        raw: bytes = scope.get("raw_path") or scope["path"].encode()
        path = canonical_path(raw.decode("latin-1"))
        if path is None:
            return min(self.default, *(cap for _, _, cap in self._caps))
        return self.for_path(path)


def too_large(cap: int) -> PayloadTooLargeError:
    return PayloadTooLargeError(f"request body exceeds {cap} bytes")


class _Counter:
    def __init__(self, receive: Receive, cap: int) -> None:
        self.receive = receive
        self.cap = cap
        self.seen = 0

    async def __call__(self) -> Message:
        message = await self.receive()
        if message["type"] == "http.request":
            self.seen += len(message.get("body", b""))
            if self.seen > self.cap:
                raise too_large(self.cap)
        return message


class BodyReads:
    """A request's ``receive`` that notes whether the body was read to its end."""

    __slots__ = ("ended", "receive")

    def __init__(self, receive: Receive) -> None:
        self.receive = receive
        self.ended = False

    async def __call__(self) -> Message:
        message = await self.receive()
        if message["type"] != "http.request" or not message.get("more_body", False):
            self.ended = True
        return message


def _has_body(scope: Scope) -> bool:
    for name, value in scope["headers"]:
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip() != b"0"):
            return True
    return False


async def drop_unread(scope: Scope, reads: BodyReads) -> None:
    """After the answer: read and drop up to ``DRAIN_BYTES`` of a body the application left
    unread, within ``DRAIN_SECONDS`` (an endless or stalled upload ends at either bound)."""
    if reads.ended or not _has_body(scope):
        return
    seen = 0
    try:
        async with asyncio.timeout(DRAIN_SECONDS):
            while seen < DRAIN_BYTES:
                message = await reads()
                if message["type"] != "http.request":
                    return  # the client went away
                seen += len(message.get("body", b""))
                if not message.get("more_body", False):
                    return
    except TimeoutError:
        return


class BodyLimit:
    def __init__(self, app: ASGIApp, caps: BodyCaps) -> None:
        self.app = app
        self.caps = caps

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cap = self.caps.for_scope(scope)
        request_id = scope.get("garrison.request_id")
        declared = header(scope, b"content-length")
        if declared is not None and not declared.isdigit():
            await send_error(send, BadRequestError("invalid Content-Length"), request_id)
            return
        if declared is not None and int(declared) > cap:
            await send_error(send, too_large(cap), request_id)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, _Counter(receive, cap), tracking_send)
        except PayloadTooLargeError as exc:
            if started:
                raise
            await send_error(send, exc, request_id)
