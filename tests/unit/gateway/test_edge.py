"""The edge layers as raw ASGI: trusted proxies, HTTPS, security headers, CORS, size caps
(E1, E2, E4, E5, E6)."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
import pytest
from starlette.testclient import TestClient
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from garrison.app import build_services
from garrison.config.settings import RouteDef
from garrison.errors import ConfigError
from garrison.gateway.asgi import create_app
from garrison.gateway.bodylimit import BodyCaps, BodyLimit
from garrison.gateway.edge import AllowedOrigins, Cors, SecurityHeaders, security_headers
from garrison.gateway.forwarded import (
    ForwardedMiddleware,
    HttpsMiddleware,
    TrustedProxies,
    https_origin,
)
from tests.conftest import MakeSettings


@dataclass
class Result:
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    seen: dict[str, Any] = field(default_factory=dict)


class Echo:
    """The innermost app: records what it saw and reads the whole body."""

    def __init__(self) -> None:
        self.seen: dict[str, Any] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            self.seen["received"] = len(body)
            if not message.get("more_body"):
                break
        self.seen.update(
            client_ip=scope.get("garrison.client_ip"), scheme=scope["scheme"], body=len(body)
        )
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


def run(
    app: ASGIApp,
    *,
    path: str = "/x",
    method: str = "GET",
    headers: Sequence[tuple[str, str]] = (),
    peer: str = "203.0.113.9",
    chunks: Sequence[bytes] = (b"",),
    scheme: str = "http",
) -> Result:
    result = Result()
    pending = list(chunks)

    async def receive() -> Message:
        body = pending.pop(0) if pending else b""
        return {"type": "http.request", "body": body, "more_body": bool(pending)}

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            result.status = message["status"]
            result.headers = {k.decode(): v.decode() for k, v in message.get("headers", [])}
        else:
            result.body += message.get("body", b"")

    scope: Scope = {
        "type": "http",
        "method": method,
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "scheme": scheme,
        "client": (peer, 40000),
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers],
    }
    anyio.run(app, scope, receive, send)
    return result


# -- E5 trusted proxies -------------------------------------------------------------------------
@pytest.mark.req("E5")
def test_forged_forwarded_for_from_untrusted_peer_is_ignored() -> None:
    echo = Echo()
    app = ForwardedMiddleware(echo, TrustedProxies(["10.0.0.0/8"]))
    run(app, headers=[("X-Forwarded-For", "1.2.3.4"), ("X-Forwarded-Proto", "https")])
    assert echo.seen["client_ip"] == "203.0.113.9"
    assert echo.seen["scheme"] == "http"


@pytest.mark.req("E5")
def test_trusted_proxy_chain_is_read_right_to_left() -> None:
    echo = Echo()
    app = ForwardedMiddleware(echo, TrustedProxies(["10.0.0.0/8"]))
    forged_then_real = "6.6.6.6, 198.51.100.7, 10.0.0.2"
    run(
        app,
        peer="10.0.0.1",
        headers=[("X-Forwarded-For", forged_then_real), ("X-Forwarded-Proto", "https")],
    )
    assert echo.seen["client_ip"] == "198.51.100.7"
    assert echo.seen["scheme"] == "https"


@pytest.mark.req("E5")
def test_no_trusted_proxies_means_peer_only() -> None:
    proxies = TrustedProxies([])
    assert proxies.client_ip("10.0.0.1", b"1.2.3.4") == "10.0.0.1"
    assert TrustedProxies(["10.0.0.0/8"]).client_ip("10.0.0.1", b"garbage, 5.5.5.5") == "5.5.5.5"
    assert TrustedProxies(["10.0.0.0/8"]).client_ip("10.0.0.1", b"5.5.5.5, junk") == "10.0.0.1"


# -- E6 HTTPS ---------------------------------------------------------------------------------
@pytest.mark.req("E6")
def test_force_https_redirects_plain_http() -> None:
    app = HttpsMiddleware(Echo(), "redirect", https_origin("https://id.example.com"))
    result = run(app, path="/auth/me", headers=[("Host", "id.example.com:80")])
    assert result.status == 308
    assert result.headers["location"] == "https://id.example.com/auth/me"
    assert run(app, scheme="https").status == 200
    assert run(app, path="/healthz").status == 200


@pytest.mark.req("E6")
@pytest.mark.parametrize(
    "host", ["evil.example", "evil.example:443", "[::1]:8080", "id.example.com@evil.example", ""]
)
def test_https_redirect_goes_to_the_configured_origin_never_the_host_header(host: str) -> None:
    """The redirect took its host from the request's ``Host`` header: an open redirect for any
    client (and ``[::1]:8080`` split at its first colon into ``https://[``)."""
    app = HttpsMiddleware(Echo(), "redirect", https_origin("https://id.example.com:8443/base"))
    headers = [("Host", host)] if host else []
    result = run(app, path="/auth/login", headers=headers)
    assert result.status == 308
    assert result.headers["location"] == "https://id.example.com:8443/auth/login"


@pytest.mark.req("E6")
@pytest.mark.parametrize(
    ("issuer", "origin"),
    [
        ("https://auth.example.com", "https://auth.example.com"),
        ("https://[2001:db8::1]:8443", "https://[2001:db8::1]:8443"),
        ("http://auth.example.com:8080", "https://auth.example.com"),  # the http port is not ours
        ("http://[::1]:8080", "https://[::1]"),
    ],
)
def test_https_origin_is_the_issuers_host_over_https(issuer: str, origin: str) -> None:
    assert https_origin(issuer) == origin.encode()


@pytest.mark.req("E6", "E5")
def test_force_https_reject_believes_proto_only_from_trusted_proxy() -> None:
    proxies = TrustedProxies(["10.0.0.0/8"])
    app = ForwardedMiddleware(HttpsMiddleware(Echo(), "reject", b""), proxies)
    https = [("X-Forwarded-Proto", "https")]
    assert run(app, peer="10.0.0.1", headers=https).status == 200
    refused = run(app, peer="203.0.113.9", headers=https)
    assert refused.status == 403
    assert json.loads(refused.body)["reasons"] == ["https required"]


# -- E1 headers -------------------------------------------------------------------------------
@pytest.mark.req("E1")
def test_security_headers_on_every_response() -> None:
    app = SecurityHeaders(
        Echo(), security_headers(["'self'", "https://api.example.com"], hsts=True)
    )
    headers = run(app).headers
    csp = headers["content-security-policy"]
    assert "connect-src 'self' https://api.example.com" in csp
    assert "frame-ancestors 'none'" in csp
    assert headers["cross-origin-opener-policy"] == "same-origin"
    assert headers["cross-origin-embedder-policy"] == "require-corp"
    assert headers["cross-origin-resource-policy"] == "same-origin"
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == "no-referrer"
    assert headers["strict-transport-security"].startswith("max-age=")


@pytest.mark.req("E1")
def test_hsts_only_when_enabled() -> None:
    app = SecurityHeaders(Echo(), security_headers(["'self'"], hsts=False))
    assert "strict-transport-security" not in run(app).headers


# -- E2 CORS ----------------------------------------------------------------------------------
PREFLIGHT = [
    ("Access-Control-Request-Method", "POST"),
    ("Access-Control-Request-Headers", "authorization, content-type"),
]


@pytest.mark.req("E2")
def test_preflight_from_allowed_origin() -> None:
    app = Cors(Echo(), AllowedOrigins(["https://app.example.com"]))
    result = run(app, method="OPTIONS", headers=[("Origin", "https://app.example.com"), *PREFLIGHT])
    assert result.status == 204
    assert result.headers["access-control-allow-origin"] == "https://app.example.com"
    assert "authorization" in result.headers["access-control-allow-headers"]
    assert "access-control-allow-credentials" not in result.headers


@pytest.mark.req("E2")
def test_preflight_from_foreign_origin_is_refused() -> None:
    app = Cors(Echo(), AllowedOrigins(["https://app.example.com"]))
    result = run(app, method="OPTIONS", headers=[("Origin", "https://evil.example"), *PREFLIGHT])
    assert result.status == 403
    assert "access-control-allow-origin" not in result.headers
    assert json.loads(result.body)["reasons"] == ["origin not allowed"]


@pytest.mark.req("E2")
def test_simple_request_from_foreign_origin_gets_no_cors_headers() -> None:
    app = Cors(Echo(), AllowedOrigins(["https://app.example.com"]))
    assert (
        "access-control-allow-origin"
        not in run(app, headers=[("Origin", "https://evil.example")]).headers
    )
    allowed = run(app, headers=[("Origin", "https://app.example.com")]).headers
    assert allowed["access-control-allow-origin"] == "https://app.example.com"
    assert allowed["vary"] == "Origin"


@pytest.mark.req("E2", "C2")
def test_wildcard_origin_refused_in_production(make_settings: MakeSettings) -> None:
    with pytest.raises(ConfigError) as caught:
        make_settings(GARRISON_ENV="production", GARRISON_CORS_ORIGINS="*")
    assert any("GARRISON_CORS_ORIGINS" in p for p in caught.value.problems)
    assert make_settings(GARRISON_CORS_ORIGINS="*").cors_origins == ("*",)


# -- E4 size caps -----------------------------------------------------------------------------
def capped(
    default: int = 100, bus: int = 50, routes: Sequence[RouteDef] = ()
) -> tuple[Echo, ASGIApp]:
    echo = Echo()
    return echo, BodyLimit(echo, BodyCaps(default, bus, routes))


@pytest.mark.req("E4")
def test_declared_length_over_cap_is_413_before_the_app_runs() -> None:
    echo, app = capped()
    result = run(app, method="POST", headers=[("Content-Length", "101")], chunks=[b"x" * 101])
    assert result.status == 413
    assert json.loads(result.body)["status"] == 413
    assert echo.seen == {}


@pytest.mark.req("E4")
def test_a_refused_body_is_dropped_up_to_a_bound_never_kept(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The 413 goes first; then a bounded part of the body is read and dropped, so a proxy still
    streaming it reads the answer instead of a reset (502). An endless upload, or one that stalls,
    ends the drain at the byte or time bound. A body read to its end is not read again."""
    import asyncio

    from garrison.gateway import bodylimit

    monkeypatch.setattr(bodylimit, "DRAIN_BYTES", 10_000)
    monkeypatch.setattr(bodylimit, "DRAIN_SECONDS", 0.2)
    echo, app = capped()
    scope = {
        "type": "http", "method": "POST", "path": "/x", "raw_path": b"/x", "query_string": b"",
        "headers": [(b"content-length", str(10**12).encode())],
    }  # fmt: skip

    async def one(stall: bool) -> tuple[list[int], int]:
        reads = 0
        statuses: list[int] = []

        async def receive() -> dict[str, object]:
            nonlocal reads
            reads += 1
            if stall and reads > 2:
                await asyncio.sleep(3600)
            return {"type": "http.request", "body": b"x" * 1000, "more_body": True}

        async def send(message: Message) -> None:
            if message["type"] == "http.response.start":
                statuses.append(int(message["status"]))

        async def front() -> None:  # as Front serves every route but /verify
            body = bodylimit.BodyReads(receive)
            await app(scope, body, send)
            await bodylimit.drop_unread(scope, body)

        await asyncio.wait_for(front(), timeout=2)
        return statuses, reads

    statuses, reads = asyncio.run(one(stall=False))
    assert statuses == [413]
    assert reads == 10  # 10,000 bytes dropped, then no more
    statuses, reads = asyncio.run(one(stall=True))
    assert statuses == [413]
    assert reads == 3  # the stalled read was given up at the time bound
    assert echo.seen == {}

    async def read_whole() -> int:
        calls = 0

        async def receive() -> dict[str, object]:
            nonlocal calls
            calls += 1
            return {"type": "http.request", "body": b"x", "more_body": False}

        body = bodylimit.BodyReads(receive)
        await body()
        await bodylimit.drop_unread({"type": "http", "headers": [(b"content-length", b"1")]}, body)
        return calls

    assert asyncio.run(read_whole()) == 1


@pytest.mark.req("E4")
def test_chunked_body_without_length_is_cut_at_the_cap() -> None:
    echo, app = capped()
    result = run(app, method="POST", chunks=[b"x" * 60, b"x" * 60, b"x" * 60, b"x" * 60])
    assert result.status == 413
    assert echo.seen["received"] == 60  # the app never held the chunk that crossed the cap


@pytest.mark.req("E4")
def test_body_within_cap_passes() -> None:
    echo, app = capped()
    assert run(app, method="POST", chunks=[b"x" * 50, b"x" * 50]).status == 200
    assert echo.seen["body"] == 100


@pytest.mark.req("E4")
def test_per_route_and_bus_caps() -> None:
    routes = [RouteDef(prefix="/upload", action="x", max_body_bytes=1000)]
    caps = BodyCaps(100, 50, routes)
    assert caps.for_path("/upload/a") == 1000
    assert caps.for_path("/system/fanout") == 50
    assert caps.for_path("/other") == 100
    _, app = capped(routes=routes)
    assert run(app, path="/upload/a", method="POST", chunks=[b"x" * 900]).status == 200
    assert run(app, path="/system/x", method="POST", chunks=[b"x" * 60]).status == 413


@pytest.mark.req("E4")
def test_invalid_content_length_is_400() -> None:
    _, app = capped()
    assert run(app, method="POST", headers=[("Content-Length", "-1")]).status == 400


# -- assembled --------------------------------------------------------------------------------
@pytest.fixture
def assembled(make_settings: MakeSettings) -> Iterator[TestClient]:
    settings = make_settings(
        GARRISON_CORS_ORIGINS="https://app.example.com", GARRISON_MAX_BODY_BYTES="1024"
    )
    services = build_services(settings)
    with TestClient(create_app(services), base_url="http://127.0.0.1") as client:
        yield client
    services.close()


@pytest.mark.req("E1", "E2", "E4")
def test_create_app_assembles_the_edge(assembled: TestClient) -> None:
    health = assembled.get("/healthz", headers={"Origin": "https://app.example.com"})
    assert health.headers["x-content-type-options"] == "nosniff"
    assert health.headers["access-control-allow-origin"] == "https://app.example.com"
    preflight = assembled.options(
        "/auth/login",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert preflight.status_code == 403

    def chunks() -> Iterator[bytes]:
        for _ in range(8):
            yield b"x" * 512

    too_big = assembled.post("/auth/login", content=chunks())
    assert too_big.status_code == 413
    assert too_big.headers["content-type"] == "application/problem+json"


@pytest.mark.req("E3", "A13")
def test_own_api_is_limited_per_ip_but_probes_are_not(make_settings: MakeSettings) -> None:
    services = build_services(make_settings(GARRISON_RATE_LIMIT_PER_WINDOW="3"))
    with TestClient(create_app(services), base_url="http://127.0.0.1") as client:
        codes = [client.get("/auth/me").status_code for _ in range(4)]
        probes = {client.get("/healthz").status_code for _ in range(5)}
    services.close()
    assert codes == [401, 401, 401, 429]
    assert probes == {200}
