"""The uvicorn factory: each worker process builds its own services from the environment."""

from __future__ import annotations

from starlette.types import ASGIApp

from garrison.app import build_services
from garrison.config import load_settings
from garrison.gateway.asgi import create_app


def factory() -> ASGIApp:
    settings = load_settings()
    return create_app(build_services(settings))
