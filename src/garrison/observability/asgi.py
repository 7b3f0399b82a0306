"""Per-request signals (L6, L9) as a tiny raw-ASGI wrapper: metrics, a span, and nothing else.

Routes are labelled by their template (``/admin/users/{user_id}``), never the raw path, so label
cardinality stays bounded whatever clients send; a proxied request by its ``[[routes]]`` prefix
(the proxy names it in ``scope["garrison.route"]``); a path no route matched is ``<unmatched>``.
Raw ASGI rather than a framework middleware: no request object, no body buffering, a few
microseconds. The framework-free routes (``/verify``) are counted by the front itself and, when
tracing is on, get their span from ``traced_fast_route``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from garrison.observability.metrics import Metrics
from garrison.observability.tracing import Tracing

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

UNMATCHED = "<unmatched>"
#: One line per request (not for the framework-free hot path); the query string is never logged.
access_log = logging.getLogger("garrison.access")
_propagator = TraceContextTextMapPropagator()


#: Where the reverse proxy names the ``[[routes]]`` prefix a request was proxied under.
PROXIED_ROUTE = "garrison.route"


def route_template(scope: Scope) -> str:
    """The matched route's path template (set by the router on the scope), the proxied route's
    prefix, else ``<unmatched>``."""
    proxied = scope.get(PROXIED_ROUTE)
    if isinstance(proxied, str):
        return proxied
    path = getattr(scope.get("route"), "path", None)
    return path if isinstance(path, str) and path else UNMATCHED


class RequestObserver:
    """Wrap ``app``: count and time every HTTP request by route; trace it when tracing is on."""

    def __init__(self, app: App, metrics: Metrics, tracing: Tracing | None = None) -> None:
        self.app = app
        self.metrics = metrics
        self.tracing = tracing

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500  # what the client sees when the app dies before answering
        started = time.perf_counter()

        async def observed_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        if self.tracing is None:
            try:
                await self.app(scope, receive, observed_send)
            finally:
                self._observe(scope, status, started)
            return
        await self._traced(scope, receive, observed_send, lambda: status, started)

    async def _traced(
        self, scope: Scope, receive: Receive, send: Send, status: Callable[[], int], started: float
    ) -> None:
        assert self.tracing is not None
        method = str(scope.get("method", "GET"))
        parent = _propagator.extract(_headers(scope))
        span = self.tracing.tracer.start_span(
            f"{method} {scope.get('path', '')}", context=parent, kind=SpanKind.SERVER
        )
        token = otel_context.attach(trace.set_span_in_context(span, parent))
        try:
            await self.app(scope, receive, send)
        finally:
            otel_context.detach(token)
            route = self._observe(scope, status(), started)
            span.update_name(f"{method} {route}")
            span.set_attributes(
                {
                    "http.request.method": method,
                    "http.route": route,
                    "http.response.status_code": status(),
                    "garrison.request_id": str(scope.get("garrison.request_id", "")),
                }
            )
            if status() >= 500:
                span.set_status(Status(StatusCode.ERROR))
            span.end()

    def _observe(self, scope: Scope, status: int, started: float) -> str:
        route = route_template(scope)
        method = str(scope.get("method", "GET"))
        seconds = time.perf_counter() - started
        self.metrics.observe_request(route, method, status, seconds)
        if access_log.isEnabledFor(logging.INFO):
            access_log.info(
                "%s %s %d",
                method,
                scope.get("path", ""),
                status,
                extra={"route": route, "status": status, "duration_ms": round(seconds * 1000, 2)},
            )
        return route


async def traced_fast_route(
    tracing: Tracing,
    route: Callable[[Scope, Receive, Send], Awaitable[int]],
    scope: Scope,
    receive: Receive,
    send: Send,
) -> int:
    """Run a framework-free route (it returns the status it sent) inside a server span, named and
    labelled as ``RequestObserver``'s are; the route may add attributes to the current span."""
    method = str(scope.get("method", "GET"))
    path = str(scope.get("path", ""))
    parent = _propagator.extract(_headers(scope))
    span = tracing.tracer.start_span(f"{method} {path}", context=parent, kind=SpanKind.SERVER)
    token = otel_context.attach(trace.set_span_in_context(span, parent))
    status = 500
    try:
        status = await route(scope, receive, send)
        return status
    finally:
        otel_context.detach(token)
        span.set_attributes(
            {
                "http.request.method": method,
                "http.route": path,
                "http.response.status_code": status,
                "garrison.request_id": str(scope.get("garrison.request_id", "")),
            }
        )
        if status >= 500:
            span.set_status(Status(StatusCode.ERROR))
        span.end()


def _headers(scope: Scope) -> dict[str, str]:
    return {
        name.decode("latin-1"): value.decode("latin-1")
        for name, value in scope.get("headers", ())
        if name in (b"traceparent", b"tracestate")
    }
