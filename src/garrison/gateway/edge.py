"""Security headers and CORS, as raw ASGI middleware (E1, E2).

``SecurityHeaders`` adds CSP (``connect-src`` from ``GARRISON_CSP_CONNECT_SRC``), COOP, COEP, CORP,
``nosniff``, ``Referrer-Policy``, ``frame-ancestors`` (and ``X-Frame-Options`` for old browsers) and,
with ``ENABLE_HSTS``, HSTS to every response; a header the application (or a proxied upstream) set
itself is left as it is.

``Cors`` answers cross-origin requests by allow-list only (``GARRISON_CORS_ORIGINS``): a preflight
from an allowed origin gets 204 and the ``Access-Control-*`` headers; a preflight from any other
origin gets 403 and none of them, so the browser blocks the real request. Credentials are bearer
tokens in a header, never cookies, so ``Access-Control-Allow-Credentials`` is never sent. A wildcard
is accepted in development only (``config.checks`` refuses it in production).
"""

from __future__ import annotations

from collections.abc import Iterable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from garrison.errors import ForbiddenError
from garrison.gateway.raw import RawHeaders, header, send_error, send_response

HSTS = b"max-age=63072000; includeSubDomains"
CORS_METHODS = b"GET, POST, PUT, PATCH, DELETE, OPTIONS"
CORS_HEADERS = frozenset(
    {"authorization", "content-type", "x-tenant-id", "x-request-id", "accept", "accept-language"}
)
CORS_MAX_AGE = b"600"


def content_security_policy(connect_src: Iterable[str]) -> bytes:
    sources = " ".join(connect_src) or "'self'"
    return (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        f"object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'; "
        f"connect-src {sources}"
    ).encode()


def security_headers(connect_src: Iterable[str], *, hsts: bool) -> RawHeaders:
    headers = [
        (b"content-security-policy", content_security_policy(connect_src)),
        (b"cross-origin-opener-policy", b"same-origin"),
        (b"cross-origin-embedder-policy", b"require-corp"),
        (b"cross-origin-resource-policy", b"same-origin"),
        (b"x-content-type-options", b"nosniff"),
        (b"referrer-policy", b"no-referrer"),
        (b"x-frame-options", b"DENY"),
    ]
    if hsts:
        headers.append((b"strict-transport-security", HSTS))
    return headers


class SecurityHeaders:
    def __init__(self, app: ASGIApp, headers: RawHeaders) -> None:
        self.app = app
        self.headers = headers
        self.names = frozenset(name for name, _ in headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {bytes(name).lower() for name, _ in message.get("headers", ())}
                extra = [(n, v) for n, v in self.headers if n not in present]
                message["headers"] = [*message.get("headers", ()), *extra]
            await send(message)

        await self.app(scope, receive, send_with_headers)


class AllowedOrigins:
    """``GARRISON_CORS_ORIGINS``: exact ``scheme://host[:port]`` matches, or ``*`` (development)."""

    def __init__(self, origins: Iterable[str]) -> None:
        allowed = {o.strip().rstrip("/") for o in origins if o.strip()}
        self.any_origin = "*" in allowed
        self.origins = frozenset(o.encode() for o in allowed if o != "*")

    def allows(self, origin: bytes) -> bool:
        return self.any_origin or origin in self.origins


def origin_refused() -> ForbiddenError:
    return ForbiddenError(
        "cross-origin request from an origin not on the allow-list",
        reasons=["origin not allowed"],
    )


class Cors:
    def __init__(self, app: ASGIApp, origins: AllowedOrigins) -> None:
        self.app = app
        self.allowed = origins
        self.any_origin = origins.any_origin

    def allows(self, origin: bytes) -> bool:
        return self.allowed.allows(origin)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        origin = header(scope, b"origin") if scope["type"] == "http" else None
        if origin is None:
            await self.app(scope, receive, send)
            return
        preflight = scope["method"] == "OPTIONS" and header(scope, b"access-control-request-method")
        if preflight:
            await self._preflight(scope, send, origin)
        elif self.allows(origin):
            await self.app(scope, receive, self._with_origin(send, origin))
        else:
            await self.app(scope, receive, send)

    async def _preflight(self, scope: Scope, send: Send, origin: bytes) -> None:
        if not self.allows(origin):
            await send_error(send, origin_refused(), scope.get("garrison.request_id"))
            return
        requested = header(scope, b"access-control-request-headers") or b""
        names = [n.strip().lower() for n in requested.decode("latin-1").split(",") if n.strip()]
        refused = [n for n in names if n not in CORS_HEADERS]
        if refused:
            denied = ForbiddenError(
                "cross-origin request asks for headers not allowed",
                reasons=[f"header not allowed: {n}" for n in refused],
            )
            await send_error(send, denied, scope.get("garrison.request_id"))
            return
        headers = [
            *self._origin_headers(origin),
            (b"access-control-allow-methods", CORS_METHODS),
            (b"access-control-allow-headers", ", ".join(sorted(CORS_HEADERS)).encode()),
            (b"access-control-max-age", CORS_MAX_AGE),
        ]
        await send_response(send, 204, headers)

    def _origin_headers(self, origin: bytes) -> RawHeaders:
        value = b"*" if self.any_origin else origin
        return [(b"access-control-allow-origin", value), (b"vary", b"Origin")]

    def _with_origin(self, send: Send, origin: bytes) -> Send:
        extra = [*self._origin_headers(origin), (b"access-control-expose-headers", b"x-request-id")]

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *extra]
            await send(message)

        return send_with_cors
