"""The edge of the service, assembled once: what wraps the application and what runs beside it.

Outermost first, for every request that is not a fast route::

    ForwardedMiddleware   client IP and scheme, believed only from trusted proxies (E5)
    HttpsMiddleware       redirect or refuse plain HTTP (E6)
    SecurityHeaders       CSP, COOP, COEP, CORP, nosniff, Referrer-Policy, HSTS (E1)
    Cors                  allow-listed origins only (E2)
    BodyLimit             413 before a body is read whole (E4)
    ReverseProxy          ``[[routes]]`` with an upstream (E8), checked by ``gateway.gate``
    RateLimitMiddleware   per-IP limits for Garrison's own API (E3), then the Starlette app

``/verify`` is a fast route (``Front.fast_routes``): it resolves the client IP itself and needs none
of the browser-facing layers, so it pays for none of them.
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx
from starlette.types import ASGIApp

from garrison.admission import Pipeline
from garrison.app import Services
from garrison.gateway.bodylimit import BodyCaps, BodyLimit
from garrison.gateway.edge import AllowedOrigins, Cors, SecurityHeaders, security_headers
from garrison.gateway.forwarded import (
    ForwardedMiddleware,
    HttpsMiddleware,
    TrustedProxies,
    https_origin,
)
from garrison.gateway.proxy import ReverseProxy, new_client
from garrison.gateway.ratelimited import RateLimitMiddleware
from garrison.gateway.verify import VerifyEndpoint


@dataclass
class Edge:
    app: ASGIApp
    verify: VerifyEndpoint
    pipeline: Pipeline
    client: httpx.AsyncClient

    async def aclose(self) -> None:
        await self.pipeline.drain()
        await self.client.aclose()


def build_edge(services: Services, app: ASGIApp) -> Edge:
    settings = services.settings
    proxies = TrustedProxies(settings.trusted_proxies)
    origins = AllowedOrigins(settings.cors_origins)
    pipeline = services.admission
    client = new_client()
    wrapped: ASGIApp = RateLimitMiddleware(app, services.guard)
    wrapped = ReverseProxy(
        wrapped, pipeline, proxies, settings.routes, client, issuer=settings.issuer
    )
    wrapped = BodyLimit(
        wrapped, BodyCaps(settings.max_body_bytes, settings.bus_max_bytes, settings.routes)
    )
    wrapped = Cors(wrapped, origins)
    wrapped = SecurityHeaders(
        wrapped, security_headers(settings.csp_connect_src, hsts=settings.enable_hsts)
    )
    wrapped = HttpsMiddleware(wrapped, settings.force_https, https_origin(settings.issuer))
    wrapped = ForwardedMiddleware(wrapped, proxies)
    verify = VerifyEndpoint(
        pipeline,
        proxies,
        origins,
        issuer=settings.issuer,
        log_sample=settings.verify_log_sample,
        traced=services.tracing is not None,
    )
    return Edge(wrapped, verify, pipeline, client)
