"""Health (L8): ``/healthz`` says only that the process answers; ``/readyz`` checks dependencies."""

from __future__ import annotations

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

from garrison.gateway.requests import services


async def healthz(_request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> JSONResponse:
    svc = services(request)
    checks: dict[str, str] = {}
    try:
        await anyio.to_thread.run_sync(svc.db.ping)
        checks["database"] = "ok"
    except Exception:
        checks["database"] = "unavailable"
    if svc.redis is None:
        checks["redis"] = "disabled"
    else:
        try:
            await anyio.to_thread.run_sync(svc.redis.ping)
            checks["redis"] = "ok"
        except Exception:
            checks["redis"] = "unavailable"
    ready = all(v in ("ok", "disabled") for v in checks.values())
    return JSONResponse(
        {"status": "ok" if ready else "unavailable", "checks": checks},
        status_code=200 if ready else 503,
        headers=None if ready else {"Retry-After": "1"},  # like every 503 Garrison sends
    )


def routes() -> list[BaseRoute]:
    return [Route("/healthz", healthz), Route("/readyz", readyz)]
