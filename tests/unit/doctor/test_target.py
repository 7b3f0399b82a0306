"""With ``--url`` the doctor judges its target (O4): every check is either asked of the target over
HTTP or labelled a check of the local configuration, and a development shell pointed at a
production deployment does not report the shell's development mode as the target's."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import uvicorn
from rich.console import Console

from garrison import doctor
from garrison.doctor import DoctorContext, Status, report
from tests.support import free_port
from tests.unit.doctor.conftest import LoadSettings, run_ids

Answer = tuple[int, list[tuple[bytes, bytes]], bytes]
JSON = [(b"content-type", b"application/json")]
HSTS = [(b"strict-transport-security", b"max-age=63072000; includeSubDomains")]


def _app(issuer: str, metrics_status: int) -> Callable[..., Any]:
    """A stand-in target that shows what a Garrison deployment shows without credentials."""

    def answer(path: str) -> Answer:
        if path == "/.well-known/openid-configuration":
            doc = {
                "issuer": issuer,
                "jwks_uri": f"{issuer}/.well-known/jwks.json",
                "id_token_signing_alg_values_supported": ["RS256"],
            }
            return 200, JSON + HSTS, json.dumps(doc).encode()
        if path == "/healthz":
            return 200, JSON + HSTS, b'{"status":"ok"}'
        if path == "/metrics":
            if metrics_status == 200:
                return 200, [(b"content-type", b"text/plain")], b"garrison_up 1\n"
            return metrics_status, [(b"content-type", b"application/problem+json")], b"{}"
        return 404, [(b"content-type", b"application/problem+json")], b"{}"

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        status, headers, body = answer(scope["path"])
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return app


def _serve(app: Callable[..., Any]) -> Iterator[str]:
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started, "target did not start"
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
def production_target() -> Iterator[str]:
    """What a production deployment behind TLS shows: an https issuer, /metrics refused."""
    yield from _serve(_app("https://auth.example.com", 401))


@pytest.fixture
def development_target() -> Iterator[str]:
    """What ``garrison serve`` with development defaults shows."""
    yield from _serve(_app("http://127.0.0.1:8080", 401))


@pytest.mark.req("O4", "C1")
def test_a_development_shell_does_not_call_a_production_target_development(
    load: LoadSettings, production_target: str
) -> None:
    results = doctor.run(DoctorContext(load(), base_url=production_target))
    assert {c.scope for c in results} == {"local", "target"}
    live = {spec.id for spec in doctor.catalogue() if spec.live}
    assert all(c.scope == "target" for c in results if c.id in live)
    mode = next(c for c in results if c.id == "operations.production-mode")
    assert mode.scope == "target"
    assert mode.status is Status.PASS, mode.finding
    assert "https://auth.example.com" in mode.finding
    for check in results:
        if check.scope == "target":
            assert "development mode" not in check.finding, check.id


@pytest.mark.req("O4", "C1")
def test_a_target_showing_development_defaults_is_reported_from_what_it_shows(
    load: LoadSettings, development_target: str
) -> None:
    ctx = DoctorContext(load(), base_url=development_target)
    mode = run_ids(ctx, "operations.production-mode")["operations.production-mode"]
    assert (mode.scope, mode.status) == ("target", Status.WARN)
    assert "http://127.0.0.1:8080" in mode.finding
    assert "GARRISON_ISSUER" in mode.fix


@pytest.mark.req("O4", "C1")
def test_without_url_the_local_configuration_is_judged_and_labelled(load: LoadSettings) -> None:
    mode = run_ids(DoctorContext(load()), "operations.production-mode")[
        "operations.production-mode"
    ]
    assert (mode.scope, mode.status) == ("local", Status.FAIL)
    assert mode.finding.startswith("development mode")
    assert mode.as_dict()["scope"] == "local"


@pytest.mark.req("O4")
def test_the_human_report_labels_each_line_local_or_target(
    load: LoadSettings, production_target: str
) -> None:
    ctx = DoctorContext(load(), base_url=production_target)
    results = list(run_ids(ctx, "operations.production-mode", "edge.hsts-setting").values())
    console = Console(record=True, width=200)
    report.render(console, results, target=production_target)
    text = console.export_text()
    lines = {line.split()[2]: line for line in text.splitlines() if line.split()[1:2]}
    assert lines["operations.production-mode"].split()[1] == "target"
    assert lines["edge.hsts-setting"].split()[1] == "local"
    assert f"target: {production_target}" in text
