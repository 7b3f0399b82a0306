"""Live checks (O4): they pass against a real `garrison serve`, and each one FAILS against a
deliberately broken server, so none of them can pass by default.

The broken server is a bare ASGI app under uvicorn on 127.0.0.1 that gets every item wrong: a chatty
/healthz, public /metrics and /admin, private key parts in its JWKS, a foreign issuer, tokens
accepted whatever their signature, query tokens ignored, no security headers, CORS origins echoed,
X-Forwarded-Proto believed from anyone, unbounded bodies, HTML errors, usernames echoed in login
failures and no throttling.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from garrison import doctor
from garrison.config import load_settings
from garrison.doctor import Check, DoctorContext, Status
from tests.support import LiveServer, base_env, create_admin, free_port

LIVE_IDS = tuple(spec.id for spec in doctor.catalogue() if spec.live)
#: Skipped on a plain-HTTP URL by design (judged in tests/unit/doctor/test_judges.py).
HTTPS_ONLY = {"edge.hsts", "edge.tls-certificate"}

Headers = list[tuple[bytes, bytes]]


async def _read_body(receive: Any) -> bytes:
    body = b""
    while True:
        message = await receive()
        body += bytes(message.get("body", b""))
        if not message.get("more_body"):
            return body


def _broken_response(
    method: str, path: str, query: bytes, headers: dict[bytes, bytes], body: bytes
) -> tuple[int, Headers, bytes]:
    as_json = [(b"content-type", b"application/json")]
    origin = headers.get(b"origin")
    cors: Headers = [(b"access-control-allow-origin", origin)] if origin else []
    if method == "OPTIONS":
        return 204, cors, b""
    if path == "/healthz":
        return 200, as_json + cors, b'{"status":"ok","version":"1.2.3","db":"postgres://db"}'
    if path == "/readyz":
        return 503, as_json, b'{"status":"unavailable","checks":{"database":"unavailable"}}'
    if path == "/metrics":
        return 200, [(b"content-type", b"text/plain")], b"requests_total 3\n"
    if path == "/admin/users":
        return 200, as_json, b"[]"
    if path == "/.well-known/jwks.json":
        key = {
            "kty": "OKP",
            "crv": "Ed25519",
            "kid": "k1",
            "alg": "EdDSA",
            "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo",
            "d": "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A",
        }
        return 200, as_json, json.dumps({"keys": [key]}).encode()
    if path == "/.well-known/openid-configuration":
        doc = {
            "issuer": "https://someone-else.example",
            "jwks_uri": "/jwks",
            "id_token_signing_alg_values_supported": ["HS256", "none"],
        }
        return 200, as_json, json.dumps(doc).encode()
    if path == "/auth/me":
        if b"authorization" in headers:
            return 200, as_json, b'{"sub":"whoever"}'
        if headers.get(b"x-forwarded-proto") != b"https":  # believed from anyone
            return 308, [(b"location", b"https://broken.example/auth/me")], b""
        return 401, as_json, b'{"error":"login"}'
    if path == "/auth/login" and method == "POST":
        try:
            name = json.loads(body).get("username", "")
        except ValueError:
            return 400, as_json, b'{"error":"bad json"}'
        return 401, as_json, json.dumps({"error": f"no such user {name}"}).encode()
    return 404, [(b"content-type", b"text/html")], b"<h1>Not Found</h1><pre>Traceback ...</pre>"


async def broken_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    assert scope["type"] == "http"
    body = await _read_body(receive)
    headers = {k.lower(): v for k, v in scope["headers"]}
    status, out, content = _broken_response(
        scope["method"], scope["path"], scope["query_string"], headers, body
    )
    await send({"type": "http.response.start", "status": status, "headers": out})
    await send({"type": "http.response.body", "body": content})


@pytest.fixture
def broken_url() -> Iterator[str]:
    port = free_port()
    config = uvicorn.Config(
        broken_app,
        host="127.0.0.1",
        port=port,
        log_level="error",
        lifespan="off",
        h11_max_incomplete_event_size=4 << 20,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started, "broken server did not start"
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def real_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    data = tmp_path_factory.mktemp("doctor-live")
    env = base_env(data)
    # an admin exists, so the forged tokens name a real admin: only their signature is wrong
    create_admin(env, "a long and unguessable passphrase")
    with LiveServer(env) as server:
        yield server


def run_live(url: str, data_dir: Path) -> dict[str, Check]:
    env = {"GARRISON_DATA_DIR": str(data_dir), "GARRISON_DOTENV": "/nonexistent"}
    ctx = DoctorContext(load_settings(env, check_production=False), base_url=url, aggressive=True)
    specs = [spec for spec in doctor.catalogue() if spec.live]
    return {check.id: check for check in doctor.run(ctx, specs)}


@pytest.mark.req("O4", "L8", "Z5", "A1", "A2", "A3", "A6", "A8", "A13", "E1", "E2", "E4", "E7")
def test_live_checks_pass_against_garrison(real_server: LiveServer) -> None:
    results = run_live(real_server.url, Path(real_server.env["GARRISON_DATA_DIR"]))
    statuses = {i: c.status for i, c in results.items()}
    expected = {i: Status.SKIP if i in HTTPS_ONLY else Status.PASS for i in LIVE_IDS}
    # plain HTTP is served (no GARRISON_FORCE_HTTPS): a forged X-Forwarded-Proto shows nothing
    expected["edge.forwarded-headers"] = Status.SKIP
    assert statuses == expected, {i: c.finding for i, c in results.items()}


@pytest.mark.req(
    "O4", "L8", "Z5", "A1", "A2", "A3", "A6", "A8", "A13", "E1", "E2", "E4", "E5", "E7"
)
def test_every_live_check_fails_against_a_broken_server(broken_url: str, tmp_path: Path) -> None:
    results = run_live(broken_url, tmp_path)
    not_failing = {
        i: (c.status, c.finding)
        for i, c in results.items()
        if c.status is not Status.FAIL and i not in HTTPS_ONLY
    }
    assert not_failing == {}
    assert "ACCEPTED" in results["tokens.alg-none"].finding
    assert "ACCEPTED" in results["tokens.alg-confusion"].finding
    assert "private members d" in results["tokens.jwks"].finding
    assert "someone-else" in results["tokens.discovery"].finding
    assert "the origin echoed" in results["edge.cors-preflight"].finding
    for check in results.values():
        if check.status is Status.FAIL:
            assert check.fix, check.id


@pytest.mark.req("O4")
def test_an_unreachable_url_is_one_fail_and_the_rest_skip(tmp_path: Path) -> None:
    results = run_live(f"http://127.0.0.1:{free_port()}", tmp_path)
    failing = [i for i, c in results.items() if c.status is Status.FAIL]
    assert len(failing) == 1
    assert "ConnectError" in results[failing[0]].finding
    assert {c.status for i, c in results.items() if i not in failing} == {Status.SKIP}
