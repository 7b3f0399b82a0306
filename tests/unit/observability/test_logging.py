"""Structured logs (L9, C6): JSON lines, the request id inside a request, secrets redacted."""

from __future__ import annotations

import io
import json
import logging
import logging.config
from collections.abc import Iterator

import anyio.to_thread
import pytest
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from garrison.app import Services
from garrison.gateway import asgi
from garrison.observability.logging import JsonFormatter, logging_config, request_id_var


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("garrison")
    logger.addHandler(handler)
    old = logger.level
    logger.setLevel(logging.INFO)
    yield stream
    logger.removeHandler(handler)
    logger.setLevel(old)


def _lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


@pytest.mark.req("L9", "C6")
def test_a_line_is_json_with_the_request_id_and_no_secret(captured: io.StringIO) -> None:
    token = request_id_var.set("req-42")
    try:
        logging.getLogger("garrison.test").warning(
            "refused Bearer eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln", extra={"password": "pw1"}
        )
    finally:
        request_id_var.reset(token)
    (line,) = _lines(captured)
    assert line["request_id"] == "req-42"
    assert line["level"] == "WARNING"
    assert line["logger"] == "garrison.test"
    assert "eyJ" not in str(line["message"])
    assert line["password"] == "[redacted]"


@pytest.mark.req("L9")
def test_outside_a_request_there_is_no_request_id(captured: io.StringIO) -> None:
    try:
        raise ValueError("token grt_" + "x" * 30)
    except ValueError:
        logging.getLogger("garrison").exception("failed")
    (line,) = _lines(captured)
    assert "request_id" not in line
    assert "ValueError" in str(line["exc"])
    assert "x" * 30 not in str(line["exc"])


@pytest.mark.req("L9")
def test_lines_logged_while_serving_carry_that_requests_id(
    services: Services, captured: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def noisy(_request: Request) -> PlainTextResponse:
        log = logging.getLogger("garrison.test")
        log.info("on the event loop")
        await anyio.to_thread.run_sync(lambda: log.info("in a worker thread"))
        return PlainTextResponse("ok")

    routes = asgi.app_routes()
    monkeypatch.setattr(asgi, "app_routes", lambda: [*routes, Route("/_noisy", noisy)])
    with TestClient(asgi.create_app(services), base_url="http://127.0.0.1") as client:
        client.get("/_noisy", headers={"X-Request-ID": "trace-me-1"})
        client.get("/_noisy", headers={"X-Request-ID": "trace-me-2"})
    lines = _lines(captured)
    ids = [line["request_id"] for line in lines if line["logger"] == "garrison.test"]
    assert ids == ["trace-me-1", "trace-me-1", "trace-me-2", "trace-me-2"]
    access = [line for line in lines if line["logger"] == "garrison.access"]
    assert [(a["request_id"], a["route"], a["status"]) for a in access] == [
        ("trace-me-1", "/_noisy", 200),
        ("trace-me-2", "/_noisy", 200),
    ]


@pytest.mark.req("L9")
def test_the_dict_config_is_valid_and_routes_the_http_server_through_json() -> None:
    config = logging_config("debug")
    assert config["formatters"]["json"]["()"].endswith("JsonFormatter")
    assert config["root"]["level"] == "DEBUG"
    root, server = logging.getLogger(), logging.getLogger("_granian")
    saved = (root.handlers[:], root.level, server.handlers[:], server.propagate)
    try:
        logging.config.dictConfig(config)
        assert any(isinstance(h.formatter, JsonFormatter) for h in root.handlers)
        # granian's supervisor and workers log through the same JSON handler, not their own
        assert [type(h.formatter) for h in server.handlers] == [JsonFormatter]
        assert logging.getLogger("granian.access").level == logging.DEBUG
    finally:
        root.handlers[:], _, server.handlers[:], server.propagate = saved
        root.setLevel(saved[1])


@pytest.mark.req("C6")
def test_cli_commands_log_through_the_redacting_formatter(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from garrison.observability.logging import configure_cli_logging

    root = logging.getLogger()
    before = list(root.handlers)
    configure_cli_logging()
    configure_cli_logging()  # once only
    ours = [h for h in root.handlers if h not in before]
    try:
        assert len(ours) == 1
        hashed = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo"
        try:
            raise RuntimeError(f"Failing row contains (u-1, dave, {hashed}, null)")
        except RuntimeError:
            logging.getLogger("garrison.keys").warning("could not re-read keys", exc_info=True)
    finally:
        for handler in ours:
            root.removeHandler(handler)
    written = capsys.readouterr().err
    assert "could not re-read keys" in written
    assert "Failing row contains" in written  # the traceback is there, the hash is not
    assert "argon2" not in written
    assert json.loads(written.splitlines()[0])["level"] == "WARNING"
