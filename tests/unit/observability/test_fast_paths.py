"""Signals of the paths that bypass the framework (L9): ``/verify`` gets a span and a sampled access
line (every refusal logged, never the credential), proxied requests are labelled by their route
prefix, and ``OTEL_SERVICE_NAME`` names the service in every span."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from starlette.testclient import TestClient

from garrison.app import Services, build_services
from garrison.config.settings import RouteDef
from garrison.gateway.asgi import create_app
from garrison.observability.tracing import Tracing
from tests.conftest import PASSWORD, MakeSettings, login
from tests.integration.edge_support import Upstream, recording_upstream

ROUTES = (
    RouteDef(prefix="/api/tickets", action="ticket.comment"),
    RouteDef(prefix="/public", action="health.read"),
)
PARENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


@pytest.fixture
def access() -> Iterator[io.StringIO]:
    """What ``garrison.access`` writes, one JSON object a line."""
    from garrison.observability.logging import JsonFormatter

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("garrison.access")
    logger.addHandler(handler)
    old = logger.level
    logger.setLevel(logging.INFO)
    yield stream
    logger.removeHandler(handler)
    logger.setLevel(old)


def _lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def _services(make_settings: MakeSettings, **env: Any) -> Services:
    services = build_services(make_settings(routes=ROUTES, **env))
    services.keyring.load()
    return services


def _verify(client: TestClient, uri: str, token: str | None = None, **headers: str) -> Any:
    sent = {"X-Original-Method": "GET", "X-Original-URI": uri, **headers}
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    return client.get("/verify", headers=sent)


@pytest.mark.req("L9")
def test_verify_gets_a_server_span_when_tracing_is_on(make_settings: MakeSettings) -> None:
    services = _services(make_settings)
    exporter = InMemorySpanExporter()
    services.tracing = Tracing(exporter, batch=False)
    try:
        with TestClient(create_app(services), base_url="http://127.0.0.1") as client:
            headers = {
                "X-Request-ID": "verify-span-1",
                "traceparent": f"00-{PARENT_TRACE}-00f067aa0ba902b7-01",
            }
            assert _verify(client, "/api/tickets/7?page=2", **headers).status_code == 401
        (span,) = [s for s in exporter.get_finished_spans() if s.name.endswith("/verify")]
        assert span.name == "GET /verify"
        attrs: Any = span.attributes
        assert attrs["http.route"] == "/verify"
        assert attrs["http.response.status_code"] == 401
        assert attrs["garrison.request_id"] == "verify-span-1"
        assert attrs["garrison.original.method"] == "GET"
        assert attrs["garrison.original.path"] == "/api/tickets/7"  # never the query string
        assert format(span.context.trace_id, "032x") == PARENT_TRACE
    finally:
        services.close()


@pytest.mark.req("L9", "C6")
def test_verify_logs_every_refusal_and_a_sample_of_the_rest_never_the_token(
    make_settings: MakeSettings, access: io.StringIO
) -> None:
    services = _services(make_settings, GARRISON_VERIFY_LOG_SAMPLE="0")
    try:
        services.users.create("vera", PASSWORD, roles=("support",))
        with TestClient(create_app(services), base_url="http://127.0.0.1") as client:
            token = login(client, "vera")["access_token"]
            for _ in range(20):
                assert _verify(client, "/api/tickets/1", token).status_code == 200
            forged = token[:-6] + "AAAAAA"
            assert _verify(client, "/api/tickets/2?q=1", forged).status_code == 401
            assert _verify(client, "/api/tickets/3").status_code == 401
        lines = [line for line in _lines(access) if line.get("route") == "/verify"]
        assert [(line["status"], line["path"]) for line in lines] == [
            (401, "/api/tickets/2"),
            (401, "/api/tickets/3"),
        ]
        assert {line["code"] for line in lines} == {"invalid_token", "no_credentials"}
        assert all(line["method"] == "GET" and line["request_id"] for line in lines)
        text = access.getvalue()
        assert token.split(".")[1] not in text
        assert forged.split(".")[2] not in text
        assert "q=1" not in text
    finally:
        services.close()


@pytest.mark.req("L9")
def test_verify_sample_rate_one_logs_every_answer(
    make_settings: MakeSettings, access: io.StringIO
) -> None:
    services = _services(make_settings, GARRISON_VERIFY_LOG_SAMPLE="1")
    try:
        with TestClient(create_app(services), base_url="http://127.0.0.1") as client:
            for _ in range(5):
                assert _verify(client, "/public/status").status_code == 200
        lines = [line for line in _lines(access) if line.get("route") == "/verify"]
        assert [line["status"] for line in lines] == [200] * 5
        assert all(line["sampled"] is True and line["duration_ms"] >= 0 for line in lines)
    finally:
        services.close()


@pytest.mark.req("L9")
def test_the_default_sample_rate_is_one_in_a_hundred(make_settings: MakeSettings) -> None:
    assert make_settings().verify_log_sample == 0.01


@pytest.mark.req("L9")
@pytest.mark.parametrize("bad", ["-0.1", "1.5", "often"])
def test_a_bad_sample_rate_is_named(make_settings: MakeSettings, bad: str) -> None:
    from garrison.errors import ConfigError

    with pytest.raises(ConfigError, match="GARRISON_VERIFY_LOG_SAMPLE"):
        make_settings(GARRISON_VERIFY_LOG_SAMPLE=bad)


@pytest.mark.req("L9")
def test_otel_service_name_names_the_service(make_settings: MakeSettings) -> None:
    endpoint = "http://127.0.0.1:9/"  # never reached: nothing is exported in this test
    named = build_services(
        make_settings(OTEL_EXPORTER_OTLP_ENDPOINT=endpoint, OTEL_SERVICE_NAME="edge-auth-eu")
    )
    default = build_services(make_settings(OTEL_EXPORTER_OTLP_ENDPOINT=endpoint))
    try:
        assert named.tracing is not None
        assert default.tracing is not None
        assert named.tracing.provider.resource.attributes["service.name"] == "edge-auth-eu"
        assert default.tracing.provider.resource.attributes["service.name"] == "garrison"
    finally:
        for svc in (named, default):
            if svc.tracing is not None:
                svc.tracing.provider.shutdown()
            svc.close()


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    with recording_upstream() as running:
        yield running


@pytest.mark.req("L9", "L6")
def test_proxied_requests_are_counted_and_logged_under_their_route(
    make_settings: MakeSettings, upstream: Upstream, access: io.StringIO
) -> None:
    routes = (
        RouteDef(prefix="/api/tickets", action="ticket.comment", upstream=upstream.url),
        RouteDef(prefix="/public", action="health.read", upstream=upstream.url),
    )
    services = build_services(make_settings(routes=routes))
    services.keyring.load()
    try:
        with TestClient(create_app(services), base_url="http://127.0.0.1") as client:
            assert client.get("/public/a/b?x=1").status_code == 200
            assert client.get("/public/c").status_code == 200
            assert client.get("/api/tickets/9").status_code == 401  # refused at the route
        sample = services.metrics.registry.get_sample_value
        count = "garrison_http_requests_total"
        assert sample(count, {"route": "/public", "method": "GET", "status": "200"}) == 2.0
        assert sample(count, {"route": "/api/tickets", "method": "GET", "status": "401"}) == 1.0
        assert sample(count, {"route": "<unmatched>", "method": "GET", "status": "200"}) is None
        routes_logged = [line["route"] for line in _lines(access)]
        assert routes_logged == ["/public", "/public", "/api/tickets"]
    finally:
        services.close()
