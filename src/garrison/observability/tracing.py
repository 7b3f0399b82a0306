"""OpenTelemetry traces (L9), on only when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set.

Spans carry ``service.name`` from ``OTEL_SERVICE_NAME`` (default ``garrison``), so several
deployments exporting to one collector are told apart.

The provider belongs to the service instance (never the process-global one), so tests and several
apps in one process do not share spans. Export is OTLP over HTTP/protobuf in a background batch
processor: a slow collector never slows a request.
"""

from __future__ import annotations

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
from opentelemetry.trace import Tracer

SERVICE_NAME = "garrison"


class Tracing:
    """A tracer provider and the tracer the ASGI observer uses; ``shutdown`` flushes spans."""

    def __init__(
        self, exporter: SpanExporter, *, batch: bool = True, service_name: str = SERVICE_NAME
    ) -> None:
        self.provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
        if batch:
            self.provider.add_span_processor(BatchSpanProcessor(exporter))
        else:
            self.provider.add_span_processor(SimpleSpanProcessor(exporter))
        self.tracer: Tracer = self.provider.get_tracer("garrison.gateway")

    @classmethod
    def otlp(cls, endpoint: str, service_name: str = SERVICE_NAME) -> Tracing:
        """``endpoint`` is the collector base URL (spec: traces go to ``<endpoint>/v1/traces``)."""
        url = endpoint.rstrip("/")
        if not url.endswith("/v1/traces"):
            url += "/v1/traces"
        return cls(OTLPSpanExporter(endpoint=url, timeout=5), service_name=service_name)

    def shutdown(self) -> None:
        self.provider.shutdown()
