"""Caddy ``forward_auth`` in front of a backend, with Garrison's /verify deciding (E8, E5, E2).

Real Caddy (deploy/caddy/Caddyfile.forward-auth), real ``garrison serve``, an echoing upstream.
Caddy returns /verify's non-2xx answers as they are, so the problem bodies are checked too.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import bearer
from tests.integration.edge_support import (
    SPOOFED,
    Child,
    caddy,
    echo_upstream,
    forward_auth_env,
    hostport,
    overrides_reaching,
    path_attack_problems,
    token,
)
from tests.support import LiveServer


@dataclass
class Stack:
    edge: Child
    support_token: str
    user_token: str


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp: Path = tmp_path_factory.mktemp("caddy-fa")
    with echo_upstream() as upstream:
        env = forward_auth_env(tmp)
        with (
            LiveServer(env) as server,
            caddy(
                "Caddyfile.forward-auth",
                tmp,
                GARRISON_ADDR=hostport(server.url),
                BACKEND_ADDR=hostport(upstream),
            ) as edge,
        ):
            yield Stack(edge, token(server.url, "sam"), token(server.url, "uma"))


@pytest.mark.req("E8")
def test_allowed_request_reaches_backend_with_identity(stack: Stack) -> None:
    response = httpx.put(
        f"{stack.edge.url}/api/tickets/7?x=1", headers=bearer(stack.support_token), content=b"hey"
    )
    assert response.status_code == 200, response.text
    seen = response.json()
    assert seen["method"] == "PUT"
    assert seen["path"] == "/api/tickets/7?x=1"
    assert seen["body_len"] == 3
    assert seen["headers"]["x-auth-user"] == "sam"
    assert seen["headers"]["x-auth-tenant"] == "acme"
    assert seen["headers"]["x-auth-roles"] == "support"


@pytest.mark.req("E8", "A8")
def test_spoofed_identity_headers_never_reach_backend(stack: Stack) -> None:
    allowed = httpx.get(
        f"{stack.edge.url}/api/tickets/7", headers={**SPOOFED, **bearer(stack.support_token)}
    ).json()
    assert allowed["headers"]["x-auth-user"] == "sam"
    assert allowed["headers"]["x-auth-roles"] == "support"
    assert [k for k, _ in allowed["header_list"]].count("x-auth-roles") == 1
    anonymous = httpx.get(f"{stack.edge.url}/public/status", headers=SPOOFED).json()
    assert {k: v for k, v in anonymous["headers"].items() if k.startswith("x-auth-") and v} == {}


@pytest.mark.req("E8")
def test_no_credentials_is_401_problem(stack: Stack) -> None:
    response = httpx.get(f"{stack.edge.url}/api/tickets/7", headers=SPOOFED)
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert response.headers["content-type"] == "application/problem+json"


@pytest.mark.req("E8", "Z1")
def test_denied_request_is_403_with_every_reason(stack: Stack) -> None:
    response = httpx.delete(f"{stack.edge.url}/api/tickets/7", headers=bearer(stack.user_token))
    assert response.status_code == 403
    reasons = response.json()["reasons"]
    assert reasons[0].startswith("role mismatch")
    assert response.headers["x-auth-deny-reason"] == reasons[0]


@pytest.mark.req("E8", "Z2")
def test_unregistered_path_is_denied(stack: Stack) -> None:
    response = httpx.get(f"{stack.edge.url}/elsewhere", headers=bearer(stack.support_token))
    assert response.status_code == 403
    assert response.json()["reasons"][0].startswith("unknown action")


@pytest.mark.req("E5", "E3", "E8")
def test_forged_forwarded_for_cannot_escape_the_per_ip_limit(stack: Stack) -> None:
    codes = [
        httpx.get(
            f"{stack.edge.url}/api/ip-limited/x", headers={"X-Forwarded-For": f"10.9.9.{i}"}
        ).status_code
        for i in range(5)
    ]
    assert codes == [200, 200, 200, 429, 429]
    refused = httpx.get(f"{stack.edge.url}/api/ip-limited/x")
    assert int(refused.headers["retry-after"]) >= 1


@pytest.mark.req("E2", "E8")
def test_cors_preflight_allowed_and_foreign(stack: Stack) -> None:
    preflight = {"Access-Control-Request-Method": "POST"}
    allowed = httpx.options(
        f"{stack.edge.url}/api/tickets/7",
        headers={"Origin": "https://app.example.com", **preflight},
    )
    assert allowed.status_code == 200
    assert allowed.json()["method"] == "OPTIONS"
    foreign = httpx.options(
        f"{stack.edge.url}/api/tickets/7", headers={"Origin": "https://evil.example", **preflight}
    )
    assert foreign.status_code == 403
    assert foreign.json()["reasons"] == ["origin not allowed"]


@pytest.mark.req("E8", "Z2")
def test_path_variants_are_never_served_as_a_shallower_route(stack: Stack) -> None:
    """``/shop/admin;x``, ``/shop/admin.``, ``/shop/ADMIN``... through real Caddy: refused, never
    authorized as the public ``/shop`` while the backend may serve ``/shop/admin``."""
    assert path_attack_problems(stack.edge.url) == []


@pytest.mark.req("E8", "E5")
def test_routing_override_headers_never_reach_the_backend(stack: Stack) -> None:
    """``X-Original-URL``, ``X-HTTP-Method-Override``, ``Forwarded``, ``X-Forwarded-Prefix``...:
    the shipped configuration strips every one a client sends."""
    assert overrides_reaching(stack.edge.url) == []
