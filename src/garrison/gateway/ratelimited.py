"""Rate limits for Garrison's own API (E3, A13): per client IP, by route group, before any handler.

Proxied routes and ``/verify`` spend their limits in ``gateway.gate`` (per identity, key, tenant or
IP); this layer covers everything else — ``/auth/*``, ``/admin/*``, ``/v1/*`` — where the caller is
not known yet, so each group counts per client IP. When the limiter is unreachable, ``/auth/*``
fails closed (503) whatever ``GARRISON_REDIS_FAIL_OPEN`` says; the rest follow the setting.
Health probes are never limited.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from garrison.errors import GarrisonError
from garrison.gateway.forwarded import PROBE_PATHS, peer_address
from garrison.gateway.raw import send_error
from garrison.ratelimit.guard import RateGuard

AUTH_PREFIX = "/auth/"


class RateLimitMiddleware:
    def __init__(self, app: ASGIApp, guard: RateGuard) -> None:
        self.app = app
        self.guard = guard

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if scope["type"] != "http" or path in PROBE_PATHS:
            await self.app(scope, receive, send)
            return
        ip = scope.get("garrison.client_ip") or peer_address(scope)
        try:
            await self.guard.check(
                path, None, None, None, ip, fail_closed=path.startswith(AUTH_PREFIX)
            )
        except GarrisonError as exc:
            await send_error(send, exc, scope.get("garrison.request_id"))
            return
        await self.app(scope, receive, send)
