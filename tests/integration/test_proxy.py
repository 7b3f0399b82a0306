"""The built-in reverse proxy (E8) over real HTTP: alone, behind real nginx and behind real Caddy.

What the upstream receives is checked (identity headers, no client-made ones, no hop-by-hop
headers, the real client address, streamed bodies), and what the edge refuses: oversized and chunked
bodies (E4), foreign CORS preflights (E2), forged X-Forwarded-For (E5).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from tests.integration.edge_support import (
    caddy,
    cookie_session,
    create_user,
    echo_upstream,
    garrison_env,
    hostport,
    nginx,
    overrides_reaching,
    path_attack_problems,
    routes_toml,
    token,
)
from tests.support import LiveServer

SPOOFED = {"X-Auth-User": "root", "X-Auth-Roles": "admin", "X-Auth-Tenant": "globex"}
CAP = 3 << 20


@dataclass
class Front:
    kind: str
    url: str
    support_token: str
    user_token: str


@pytest.fixture(scope="module", params=["direct", "nginx", "caddy"])
def front(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Front]:
    kind: str = request.param
    tmp = tmp_path_factory.mktemp(f"proxy-{kind}")
    # Alone, the client is not a proxy: an address outside the loopback is the only trusted one.
    trusted = "10.255.255.0/24" if kind == "direct" else "127.0.0.1/32"
    with echo_upstream() as upstream:
        env = garrison_env(
            tmp,
            routes_toml(upstream),
            GARRISON_TRUSTED_PROXIES=trusted,
            GARRISON_CORS_ORIGINS="https://app.example.com",
            GARRISON_MAX_BODY_BYTES=str(CAP),
        )
        create_user(env, "sam", "--role", "support", "--tenant", "acme")
        create_user(env, "uma", "--role", "user")
        with LiveServer(env) as server:
            tokens = token(server.url, "sam"), token(server.url, "uma")
            if kind == "direct":
                yield Front(kind, server.url, *tokens)
            elif kind == "nginx":
                with nginx(
                    "reverse-proxy.conf.template", tmp, GARRISON=hostport(server.url)
                ) as edge:
                    yield Front(kind, edge.url, *tokens)
            else:
                with caddy(
                    "Caddyfile.reverse-proxy", tmp, GARRISON_ADDR=hostport(server.url)
                ) as edge:
                    yield Front(kind, edge.url, *tokens)


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


def chunks(count: int, size: int = 65536) -> Iterator[bytes]:
    for _ in range(count):
        yield b"x" * size


@pytest.mark.req("E8")
def test_upstream_gets_identity_and_streamed_body(front: Front) -> None:
    response = httpx.post(
        f"{front.url}/api/tickets/7?q=1",
        headers={**SPOOFED, **bearer(front.support_token)},
        content=chunks(32),  # 2 MiB, chunked, no length
        timeout=30,
    )
    assert response.status_code == 200, response.text
    seen = response.json()
    assert seen["path"] == "/api/tickets/7?q=1"
    assert seen["body_len"] == 32 * 65536
    assert seen["headers"]["x-auth-user"] == "sam"
    assert seen["headers"]["x-auth-roles"] == "support"
    assert seen["headers"]["x-auth-tenant"] == "acme"
    assert [k for k, _ in seen["header_list"]].count("x-auth-user") == 1
    assert response.headers["x-content-type-options"] == "nosniff"


@pytest.mark.req("E8")
def test_large_download_streams(front: Front) -> None:
    size = 8 << 20
    with httpx.stream(
        "GET", f"{front.url}/big/{size}", headers=bearer(front.support_token), timeout=30
    ) as response:
        assert response.status_code == 200
        total = sum(len(part) for part in response.iter_raw())
    assert total == size


@pytest.mark.req("E8")
def test_hop_by_hop_headers_are_not_forwarded(front: Front) -> None:
    seen = httpx.get(
        f"{front.url}/api/tickets/7",
        headers={
            "Connection": "keep-alive, X-Secret",
            "X-Secret": "1",
            "Keep-Alive": "timeout=5",
            "Proxy-Authorization": "Basic eDp5",
            **bearer(front.support_token),
        },
    ).json()
    assert "keep-alive" not in seen["headers"]
    assert "proxy-authorization" not in seen["headers"]
    assert seen["headers"].get("connection", "keep-alive").lower() == "keep-alive"
    if front.kind == "direct":  # a front proxy drops the client's Connection header itself
        assert "x-secret" not in seen["headers"]


@pytest.mark.req("E8", "A8")
def test_anonymous_public_route_gets_no_identity(front: Front) -> None:
    seen = httpx.get(f"{front.url}/public/x", headers=SPOOFED).json()
    assert not [k for k in seen["headers"] if k.startswith("x-auth-")]


@pytest.mark.req("E8", "Z1")
def test_checks_before_the_upstream(front: Front) -> None:
    assert httpx.get(f"{front.url}/api/tickets/7").status_code == 401
    denied = httpx.get(f"{front.url}/api/tickets/7", headers=bearer(front.user_token))
    assert denied.status_code == 403
    assert denied.json()["reasons"][0].startswith("role mismatch")
    assert denied.headers["x-auth-deny-reason"].startswith("role mismatch")


@pytest.mark.req("E8")
def test_unreachable_upstream_is_502(front: Front) -> None:
    response = httpx.get(f"{front.url}/dead/x")
    assert response.status_code == 502
    assert response.headers["content-type"] == "application/problem+json"


@pytest.mark.req("E4")
def test_oversized_body_is_413(front: Front) -> None:
    declared = httpx.post(
        f"{front.url}/api/tickets/7", headers=bearer(front.support_token), content=b"x" * (CAP + 1)
    )
    assert declared.status_code == 413
    assert declared.json()["status"] == 413
    route_cap = httpx.post(f"{front.url}/public/x", content=b"x" * 5000)
    assert route_cap.status_code == 413


@pytest.mark.req("E4", "E8")
def test_an_early_refusal_of_a_large_upload_reaches_the_client(front: Front) -> None:
    """Refused before its body is read (no credentials, a bad token): the answer must reach the
    client through a proxy that is still streaming the upload, not become the proxy's 502."""
    body = b"x" * (2 * 1024 * 1024)  # under the cap, larger than any socket buffer
    anonymous = httpx.post(f"{front.url}/api/tickets/7", content=body, timeout=30)
    assert anonymous.status_code == 401
    assert anonymous.headers["content-type"] == "application/problem+json"
    forged = httpx.post(
        f"{front.url}/api/tickets/7", headers=bearer("not.a.token"), content=body, timeout=30
    )
    assert forged.status_code == 401


@pytest.mark.req("E4")
def test_chunked_body_over_the_cap_is_413(front: Front) -> None:
    response = httpx.post(f"{front.url}/public/x", content=chunks(4, 4096), timeout=30)
    assert response.status_code == 413
    big = httpx.post(
        f"{front.url}/api/tickets/7",
        headers=bearer(front.support_token),
        content=chunks(64),  # 4 MiB > 3 MiB
        timeout=30,
    )
    assert big.status_code == 413


@pytest.mark.req("E2")
def test_cors_preflights(front: Front) -> None:
    asks = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization",
    }
    allowed = httpx.options(
        f"{front.url}/api/tickets/7", headers={"Origin": "https://app.example.com", **asks}
    )
    assert allowed.status_code == 204
    assert allowed.headers["access-control-allow-origin"] == "https://app.example.com"
    foreign = httpx.options(
        f"{front.url}/api/tickets/7", headers={"Origin": "https://evil.example", **asks}
    )
    assert foreign.status_code == 403
    assert "access-control-allow-origin" not in foreign.headers


@pytest.mark.req("E5", "E3")
def test_forged_forwarded_for_is_ignored(front: Front) -> None:
    seen = httpx.get(
        f"{front.url}/api/tickets/7",
        headers={"X-Forwarded-For": "6.6.6.6", **bearer(front.support_token)},
    ).json()
    assert "6.6.6.6" not in seen["headers"]["x-forwarded-for"]
    codes = [
        httpx.get(
            f"{front.url}/api/ip-limited/x", headers={"X-Forwarded-For": f"10.9.9.{i}"}
        ).status_code
        for i in range(5)
    ]
    assert codes == [200, 200, 200, 429, 429]


@pytest.mark.req("E8", "Z2")
def test_path_variants_are_never_served_as_a_shallower_route(front: Front) -> None:
    assert path_attack_problems(front.url) == []


@pytest.mark.req("E8", "E5")
def test_routing_override_headers_never_reach_the_upstream(front: Front) -> None:
    assert overrides_reaching(front.url) == []


@pytest.mark.req("A9", "E8")
def test_a_browser_session_cookie_passes_the_proxy_with_csrf_rules(front: Front) -> None:
    cookie, csrf = cookie_session(front.url, "sam")
    url = f"{front.url}/api/tickets/7"
    read = httpx.get(url, headers={"Cookie": cookie})
    assert read.status_code == 200, read.text
    assert read.json()["headers"]["x-auth-user"] == "sam"
    refused = httpx.post(url, headers={"Cookie": cookie}, content=b"x")
    assert refused.status_code == 403
    assert refused.json()["reasons"] == ["csrf token missing or invalid"]
    sent = httpx.post(
        url,
        headers={"Cookie": cookie, "X-CSRF-Token": csrf, "Origin": front.url},
        content=b"x",
    )
    assert sent.status_code == 200, sent.text
    elsewhere = httpx.post(
        url,
        headers={"Cookie": cookie, "X-CSRF-Token": csrf, "Origin": "https://evil.example"},
        content=b"x",
    )
    assert elsewhere.status_code == 403
