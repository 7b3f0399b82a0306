"""The uvicorn factory: each worker process builds its own services from the environment."""

from __future__ import annotations

import gc
import os

from starlette.types import ASGIApp

from garrison.app import build_services
from garrison.config import load_settings
from garrison.gateway.asgi import create_app

#: Allocations between young-generation collections. A request allocates a few hundred short-lived
#: objects; CPython's default (700) runs a collection every couple of requests on the hot path.
GC_YOUNG_THRESHOLD = 20_000


def factory() -> ASGIApp:
    settings = load_settings(os.environ)
    app = create_app(build_services(settings))
    tune_gc()
    return app


def tune_gc() -> None:
    """Move everything built at start-up out of the collector's sight (it lives as long as the
    process), and collect young objects less often. Reference counting still frees almost every
    request's garbage at once; the collector is only for cycles."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)
