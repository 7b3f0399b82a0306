"""``GET /metrics`` (L6, L8, Z5): Prometheus text, for admins only unless the operator opens it.

``GARRISON_METRICS_PUBLIC`` is for deployments where the network already restricts who reaches the
port (a scrape-only listener, a private network); otherwise the caller is admitted as
``metrics.read``: a platform admin (the figures are every tenant's), an API key only when scoped to
it and not under ``REQUIRE_JWT_FOR_ADMIN``.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from garrison.gateway.requests import admit, services


async def metrics(request: Request) -> Response:
    svc = services(request)
    if not svc.settings.metrics_public:
        await admit(request, "metrics.read")  # platform-only: the figures of every tenant
    return Response(
        generate_latest(svc.metrics.registry),
        media_type=CONTENT_TYPE_LATEST,
        headers={"Cache-Control": "no-store"},
    )


def routes() -> list[BaseRoute]:
    return [Route("/metrics", metrics, methods=["GET"])]
