"""nginx ``auth_request`` in front of a backend, with Garrison's /verify deciding (E8, E5, E2, E4).

Real nginx (deploy/nginx/*.template), real ``garrison serve``, an echoing upstream: what the backend
receives is checked, including that a client cannot hand it identity headers or a forged address.
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
    cookie_session,
    echo_upstream,
    forward_auth_env,
    hostport,
    nginx,
    overrides_reaching,
    path_attack_problems,
    raw_request,
    token,
)
from tests.support import LiveServer


@dataclass
class Stack:
    edge: Child
    garrison: LiveServer
    support_token: str
    user_token: str


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp: Path = tmp_path_factory.mktemp("nginx-fa")
    with echo_upstream() as upstream:
        env = forward_auth_env(tmp)
        with (
            LiveServer(env) as server,
            nginx(
                "forward-auth.conf.template",
                tmp,
                GARRISON=hostport(server.url),
                BACKEND=hostport(upstream),
            ) as edge,
        ):
            yield Stack(edge, server, token(server.url, "sam"), token(server.url, "uma"))


@pytest.mark.req("E8")
def test_allowed_request_reaches_backend_with_identity(stack: Stack) -> None:
    response = httpx.post(
        f"{stack.edge.url}/api/tickets/7?x=1", headers=bearer(stack.support_token), content=b"hi"
    )
    assert response.status_code == 200, response.text
    seen = response.json()
    assert seen["path"] == "/api/tickets/7?x=1"
    assert seen["body_len"] == 2
    assert seen["headers"]["x-auth-user"] == "sam"
    assert seen["headers"]["x-auth-tenant"] == "acme"
    assert seen["headers"]["x-auth-roles"] == "support"
    assert seen["headers"]["x-auth-subject"]


@pytest.mark.req("E8", "A8")
def test_spoofed_identity_headers_never_reach_backend(stack: Stack) -> None:
    allowed = httpx.get(
        f"{stack.edge.url}/api/tickets/7", headers={**SPOOFED, **bearer(stack.support_token)}
    ).json()
    assert allowed["headers"]["x-auth-user"] == "sam"
    assert allowed["headers"]["x-auth-roles"] == "support"
    assert [k for k, _ in allowed["header_list"]].count("x-auth-user") == 1
    anonymous = httpx.get(f"{stack.edge.url}/public/status", headers=SPOOFED).json()
    assert not {k for k in anonymous["headers"] if k.startswith("x-auth-")}


@pytest.mark.req("E8")
def test_no_credentials_is_401_with_challenge(stack: Stack) -> None:
    response = httpx.get(f"{stack.edge.url}/api/tickets/7", headers=SPOOFED)
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.req("E8", "Z1")
def test_denied_request_is_403_with_reason(stack: Stack) -> None:
    response = httpx.get(f"{stack.edge.url}/api/tickets/7", headers=bearer(stack.user_token))
    assert response.status_code == 403
    assert response.headers["x-auth-deny-reason"].startswith("role mismatch")


@pytest.mark.req("E8", "Z2")
def test_path_tricks_do_not_reach_a_public_prefix(stack: Stack) -> None:
    for target in (b"/public/../api/tickets/7", b"/public/%2e%2e/api/tickets/7"):
        status, _ = raw_request(stack.edge.url, target)
        assert status == 400, target  # refused (nginx maps /verify's 400 back from 500)
    assert raw_request(stack.edge.url, b"//api/tickets/7")[0] == 401


@pytest.mark.req("E5", "E3", "E8")
def test_forged_forwarded_for_cannot_escape_the_per_ip_limit(stack: Stack) -> None:
    codes = [
        httpx.get(
            f"{stack.edge.url}/api/ip-limited/x", headers={"X-Forwarded-For": f"10.9.9.{i}"}
        ).status_code
        for i in range(5)
    ]
    assert codes[:3] == [200, 200, 200]
    assert codes[3:] == [429, 429]
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
    assert allowed.status_code == 200  # reached the backend, which answers its own preflight
    assert allowed.json()["method"] == "OPTIONS"
    foreign = httpx.options(
        f"{stack.edge.url}/api/tickets/7", headers={"Origin": "https://evil.example", **preflight}
    )
    assert foreign.status_code == 403
    assert foreign.headers["x-auth-deny-reason"] == "origin not allowed"


@pytest.mark.req("E4")
def test_oversized_and_chunked_bodies_are_refused(stack: Stack) -> None:
    big = httpx.post(
        f"{stack.edge.url}/api/tickets/7",
        headers=bearer(stack.support_token),
        content=b"x" * (2 << 20),
    )
    assert big.status_code == 413

    def chunks() -> Iterator[bytes]:
        for _ in range(40):
            yield b"x" * 65536

    chunked = httpx.post(
        f"{stack.edge.url}/api/tickets/7", headers=bearer(stack.support_token), content=chunks()
    )
    assert chunked.status_code == 413


@pytest.mark.req("E8", "Z2")
def test_path_variants_are_never_served_as_a_shallower_route(stack: Stack) -> None:
    """``/shop/admin;x``, ``/shop/admin.``, ``/shop/ADMIN``... through real nginx: refused, never
    authorized as the public ``/shop`` while the backend may serve ``/shop/admin``."""
    assert path_attack_problems(stack.edge.url) == []


@pytest.mark.req("E8", "E5")
def test_routing_override_headers_never_reach_the_backend(stack: Stack) -> None:
    """``X-Original-URL``, ``X-HTTP-Method-Override``, ``Forwarded``, ``X-Forwarded-Prefix``...:
    the shipped configuration strips every one a client sends."""
    assert overrides_reaching(stack.edge.url) == []


@pytest.mark.req("A9", "E8")
def test_a_browser_session_cookie_passes_nginx_auth_request_with_csrf_rules(stack: Stack) -> None:
    """A browser session reached Garrison's API but not a backend behind nginx: /verify ignored
    the session cookie. Now it authenticates there as at the API, CSRF rules included."""
    cookie, csrf = cookie_session(stack.garrison.url, "sam")
    url = f"{stack.edge.url}/api/tickets/7"
    read = httpx.get(url, headers={"Cookie": cookie})
    assert read.status_code == 200, read.text
    assert read.json()["headers"]["x-auth-user"] == "sam"
    assert httpx.post(url, headers={"Cookie": cookie}, content=b"x").status_code == 403
    forged = httpx.post(
        url, headers={"Cookie": cookie, "X-CSRF-Token": csrf[:-2] + "00"}, content=b"x"
    )
    assert forged.status_code == 403
    cross = httpx.post(
        url,
        headers={"Cookie": cookie, "X-CSRF-Token": csrf, "Sec-Fetch-Site": "cross-site"},
        content=b"x",
    )
    assert cross.status_code == 403
    sent = httpx.post(
        url,
        headers={"Cookie": cookie, "X-CSRF-Token": csrf, "Sec-Fetch-Site": "same-origin"},
        content=b"x",
    )
    assert sent.status_code == 200, sent.text
    assert sent.json()["headers"]["x-auth-user"] == "sam"
    from_site = httpx.post(
        url, headers={"Cookie": cookie, "X-CSRF-Token": csrf, "Origin": stack.edge.url}
    )
    assert from_site.status_code == 200, from_site.text
    elsewhere = httpx.post(
        url, headers={"Cookie": cookie, "X-CSRF-Token": csrf, "Origin": "https://evil.example"}
    )
    assert elsewhere.status_code == 403
