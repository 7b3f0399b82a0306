"""OpenTelemetry (L9): a server span per request with route, status and request id, sent by OTLP."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from starlette.testclient import TestClient

from garrison.app import Services, build_services
from garrison.gateway.asgi import create_app
from garrison.observability.tracing import Tracing
from tests.conftest import MakeSettings

PARENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


@pytest.fixture
def spans(services: Services) -> Iterator[tuple[TestClient, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    services.tracing = Tracing(exporter, batch=False)
    with TestClient(create_app(services), base_url="http://127.0.0.1") as client:
        yield client, exporter


@pytest.mark.req("L9")
def test_each_request_gets_a_server_span_named_by_route(
    spans: tuple[TestClient, InMemorySpanExporter],
) -> None:
    client, exporter = spans
    client.patch(
        "/admin/users/u-123",
        json={"active": False},
        headers={
            "X-Request-ID": "span-req-1",
            "traceparent": f"00-{PARENT_TRACE}-00f067aa0ba902b7-01",
        },
    )
    (span,) = exporter.get_finished_spans()
    assert span.name == "PATCH /admin/users/{user_id}"
    attrs: Any = span.attributes
    assert attrs["http.route"] == "/admin/users/{user_id}"
    assert attrs["http.response.status_code"] == 401
    assert attrs["garrison.request_id"] == "span-req-1"
    assert format(span.context.trace_id, "032x") == PARENT_TRACE  # joins the caller's trace
    assert "u-123" not in span.name


class _Collector(BaseHTTPRequestHandler):
    received: list[tuple[str, str, int]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append((self.path, self.headers["Content-Type"], len(body)))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *_args: Any) -> None:
        pass


@pytest.mark.req("L9")
def test_spans_reach_an_otlp_http_collector(make_settings: MakeSettings) -> None:
    server = HTTPServer(("127.0.0.1", 0), _Collector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    svc = build_services(make_settings(OTEL_EXPORTER_OTLP_ENDPOINT=endpoint))
    try:
        assert svc.tracing is not None
        with TestClient(create_app(svc), base_url="http://127.0.0.1") as client:
            assert client.get("/healthz").status_code == 200
        # leaving the client ran the lifespan's shutdown, which flushed the batch
        assert _Collector.received
        path, ctype, size = _Collector.received[0]
        assert (path, ctype) == ("/v1/traces", "application/x-protobuf")
        assert size > 0
    finally:
        svc.close()
        server.shutdown()
        server.server_close()


@pytest.mark.req("L9")
def test_no_endpoint_means_no_tracing(services: Services) -> None:
    assert services.tracing is None
