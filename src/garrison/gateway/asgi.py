"""The ASGI application: a thin raw-ASGI front for the hot path, Starlette for everything else.

``create_app`` is the only place routes and middleware are assembled. ``fast_routes`` are served
without the framework (``/verify`` pays for no middleware stack it does not need); every other path
goes to the Starlette app, whose errors all become problem+json (E7).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import re
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio.to_thread
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from garrison.app import Services
from garrison.audit.writer import AuditWriter
from garrison.errors import GarrisonError, UnavailableError
from garrison.gateway import console
from garrison.gateway.bodylimit import BodyReads, drop_unread
from garrison.gateway.problem import problem_body, problem_response, simple_problem
from garrison.gateway.querycreds import has_query_credentials
from garrison.gateway.routes import admin, auth, health, wellknown
from garrison.gateway.routes import audit as audit_routes
from garrison.gateway.routes import decide as decide_routes
from garrison.gateway.routes import docs as docs_routes
from garrison.gateway.routes import metrics as metrics_routes
from garrison.gateway.routes import oidc as oidc_routes
from garrison.gateway.routes import self_service as self_service_routes
from garrison.gateway.routes import vault as vault_routes
from garrison.gateway.stack import build_edge
from garrison.observability.asgi import RequestObserver, traced_fast_route
from garrison.observability.logging import request_id_var
from garrison.policy.watch import start_policy_watch

log = logging.getLogger("garrison.gateway")

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


async def _garrison_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, GarrisonError)
    if isinstance(exc, UnavailableError):  # 503 + Retry-After, counted by dependency
        request.app.state.services.metrics.dependency_unavailable(exc.dependency)
    return problem_response(exc)


async def _http_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    titles = {404: "Not found", 405: "Method not allowed"}
    title = titles.get(exc.status_code, "Request error")
    response = simple_problem(exc.status_code, title, str(exc.detail), f"http_{exc.status_code}")
    if exc.headers:
        response.headers.update(exc.headers)
    return response


async def _unhandled(_request: Request, exc: Exception) -> Response:
    log.error("unhandled error", exc_info=exc)
    return simple_problem(
        500, "Internal error", "the server could not complete the request", "internal"
    )


def app_routes() -> list[BaseRoute]:
    return [
        *health.routes(),
        *wellknown.routes(),
        *auth.routes(),
        *self_service_routes.routes(),
        *oidc_routes.routes(),
        *admin.routes(),
        *audit_routes.routes(),
        *metrics_routes.routes(),
        *decide_routes.routes(),
        *vault_routes.routes(),
        *docs_routes.routes(),
        *console.routes(),
    ]


def create_app(services: Services) -> ASGIApp:
    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        await anyio.to_thread.run_sync(services.keyring.load)
        key_refresher = asyncio.create_task(_refresh_keys(services), name="garrison-keys")
        refusals = asyncio.create_task(_flush_refusals(services), name="garrison-refusals")
        await services.bus.start()
        writer = services.audit if isinstance(services.audit, AuditWriter) else None
        if writer is not None:
            writer.start()  # group commit from here on (L1)
        # SIGHUP or a file change reloads policies; both outcomes are audited (Z3, L2)
        stop_policy_watch = start_policy_watch(services.authorizer, audit=services.audit)
        try:
            yield
        finally:
            key_refresher.cancel()
            refusals.cancel()
            stop_policy_watch()
            await (
                edge.aclose()
            )  # pending API-key use and refusal records, the proxy's connection pool
            await services.bus.stop()
            if writer is not None:
                await anyio.to_thread.run_sync(writer.stop)
            if services.tracing is not None:
                await anyio.to_thread.run_sync(services.tracing.shutdown)

    inner = Starlette(
        routes=app_routes(),
        exception_handlers={
            GarrisonError: _garrison_error,
            HTTPException: _http_error,
            Exception: _unhandled,
        },
        lifespan=lifespan,
    )
    inner.state.services = services
    edge = build_edge(services, inner)  # trusted proxies, HTTPS, headers, CORS, caps, proxy
    front = Front(services, edge.app)
    front.fast_routes["/verify"] = edge.verify
    return front


async def _refresh_keys(services: Services) -> None:
    """Re-read signing keys off the request path, so an emergency rotation made by another
    process reaches this one within ``refresh_interval`` even if its bus message is lost (A6)."""
    keyring = services.keyring
    keyring.refresh_inline = False
    try:
        while True:
            await asyncio.sleep(keyring.refresh_interval)
            await anyio.to_thread.run_sync(keyring.refresh_if_stale)
    finally:
        keyring.refresh_inline = True


async def _flush_refusals(services: Services) -> None:
    """Write each second's aggregated anonymous refusals and API-key uses once it is over (L2)."""
    while True:
        await asyncio.sleep(1.0)
        await services.admission.flush()


#: A framework-free route answers by itself and returns the status it sent (for the counter).
FastRoute = Callable[[Scope, Receive, Send], Awaitable[int]]


class Front:
    """Request id, credential-in-query refusal, and dispatch of the framework-free routes."""

    def __init__(self, services: Services, app: ASGIApp) -> None:
        self.services = services
        self.app = app
        self.observed = RequestObserver(app, services.metrics, services.tracing)
        self.fast_routes: dict[str, FastRoute] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _request_id(scope)
        scope["garrison.request_id"] = request_id
        request_id_var.set(request_id)  # every log line of this request carries it (L9)
        query: bytes = scope.get("query_string", b"")
        if query and has_query_credentials(query):
            await _refuse_query_credentials(scope, send, request_id)
            return
        fast = self.fast_routes.get(scope["path"])
        if fast is not None:
            tracing = self.services.tracing
            if tracing is None:
                status = await fast(scope, receive, send)
            else:
                status = await traced_fast_route(tracing, fast, scope, receive, send)
            self.services.metrics.count_request(scope["path"], scope["method"], status)
            return

        async def send_with_id(message: Any) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        reads = BodyReads(receive)
        await self.observed(scope, reads, send_with_id)
        await drop_unread(scope, reads)  # a proxy streaming the upload must read the answer


_ID_PREFIX = secrets.token_hex(4)  # this process's; a counter makes each id unique within it
_id_counter = itertools.count(1)


def _request_id(scope: Scope) -> str:
    """The client's ``X-Request-ID`` when it is well-formed, else a new one (correlation only:
    not a secret, so a counter is enough and costs a third of reading the OS's randomness)."""
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            text: str = value.decode("latin-1")
            if _REQUEST_ID.match(text):
                return text
            break
    return f"{_ID_PREFIX}{next(_id_counter):08x}"


async def _refuse_query_credentials(scope: Scope, send: Send, request_id: str) -> None:
    """A credential in the query string is never used (A8), as RFC 6750 3.1 has it: alone, the
    request is unauthenticated (401); next to an Authorization header it is malformed (400)."""
    detail = "credentials are accepted only in the Authorization header"
    with_header = any(name == b"authorization" for name, _ in scope.get("headers", ()))
    status, title = (400, "Bad request") if with_header else (401, "Authentication required")
    body = problem_body(status, title, detail, code="credentials_in_query")
    challenge = f'Bearer realm="garrison", error="invalid_request", error_description="{detail}"'
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/problem+json"),
                (b"content-length", str(len(body)).encode()),
                (b"www-authenticate", challenge.encode()),
                (b"x-request-id", request_id.encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
