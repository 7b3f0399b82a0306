"""``/admin/audit``, ``/admin/audit/verify``, ``/metrics``, ``/healthz``, ``/readyz`` over HTTP.

(L2, L4, L6, L7, L8, Z5, A7): who may read what, and that the signals move when things happen.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import sqlalchemy as sa
from starlette.testclient import TestClient

from garrison.app import build_services
from garrison.gateway.asgi import create_app
from garrison.identity.users import User
from tests.conftest import MakeSettings, bearer, login
from tests.support import free_port


@contextmanager
def _client(make_settings: MakeSettings, **env: Any) -> Iterator[TestClient]:
    svc = build_services(make_settings(**env))
    try:
        with TestClient(create_app(svc), base_url="http://127.0.0.1") as client:
            yield client
    finally:
        svc.close()


def _token(client: TestClient, name: str) -> str:
    token: str = login(client, name)["access_token"]
    return token


@pytest.mark.req("L2", "L4", "Z5")
def test_admins_read_the_log_with_filters(
    client: TestClient, make_user: Callable[..., User]
) -> None:
    make_user("root", roles=("admin",))
    make_user("bob")
    client.post("/auth/login", json={"username": "bob", "password": "wrong-password"})
    token = _token(client, "root")
    client.post(
        "/admin/users",
        json={"username": "carol", "password": "long enough pw"},
        headers=bearer(token),
    )
    every = client.get("/admin/audit", headers=bearer(token)).json()
    assert [r["action"] for r in every["records"]][:3] == [
        "admin.user.create",
        "auth.login",
        "auth.login",
    ]
    failed = client.get(
        "/admin/audit", params={"action": "auth.login", "outcome": "failure"}, headers=bearer(token)
    ).json()["records"]
    assert [(r["actor"], r["reason"]) for r in failed] == [("bob", "bad password")]
    assert failed[0]["ip"]
    assert failed[0]["request_id"]
    assert failed[0]["time"].endswith("Z")
    recent = client.get(
        "/admin/audit",
        params={"action": "admin.", "since": "1h", "limit": "5"},
        headers=bearer(token),
    ).json()
    assert recent["count"] == 1

    for bad in ({"outcome": "maybe"}, {"limit": "many"}, {"since": "soon"}, {"secret": "x"}):
        assert client.get("/admin/audit", params=bad, headers=bearer(token)).status_code == 422


@pytest.mark.req("Z5", "L4")
def test_the_log_is_closed_to_anonymous_and_non_admin_callers(
    client: TestClient, make_user: Callable[..., User]
) -> None:
    make_user("bob")
    for path in ("/admin/audit", "/admin/audit/verify", "/metrics"):
        assert client.get(path).status_code == 401
        assert client.get(path, headers=bearer(_token(client, "bob"))).status_code == 403


@pytest.mark.req("T3", "L4")
def test_a_tenant_admin_sees_only_its_tenant(
    client: TestClient, make_user: Callable[..., User]
) -> None:
    make_user("acme-admin", roles=("admin",), tenant="acme")
    make_user("other", tenant="globex")
    make_user("acme-user", tenant="acme")
    _token(client, "other")
    _token(client, "acme-user")
    token = _token(client, "acme-admin")
    for params in ({}, {"tenant": "globex"}):
        records = client.get("/admin/audit", params=params, headers=bearer(token)).json()["records"]
        assert records
        assert {r["tenant"] for r in records} == {"acme"}
    assert client.get("/admin/audit/verify", headers=bearer(token)).status_code == 403


@pytest.mark.req("L7")
def test_verify_over_http_names_the_first_bad_record(
    client: TestClient, make_user: Callable[..., User]
) -> None:
    make_user("root", roles=("admin",))
    token = _token(client, "root")
    _token(client, "root")
    report = client.get("/admin/audit/verify", headers=bearer(token)).json()
    assert (report["ok"], report["checked"]) == (True, 2)
    anchor = f"{report['head_seq']}:{report['head_hash']}"
    pinned = client.get("/admin/audit/verify", params={"anchor": anchor}, headers=bearer(token))
    assert pinned.json()["ok"]
    beyond = client.get(
        "/admin/audit/verify", params={"anchor": "99:" + "0" * 64}, headers=bearer(token)
    ).json()
    assert (beyond["ok"], beyond["first_bad_seq"]) == (False, 3)
    bad = client.get("/admin/audit/verify", params={"anchor": "x"}, headers=bearer(token))
    assert bad.status_code == 422
    svc = client.app.services  # type: ignore[attr-defined]
    with svc.db.engine.begin() as conn:
        conn.execute(sa.text("UPDATE audit_log SET actor = 'x' WHERE seq = 2"))
    report = client.get("/admin/audit/verify", headers=bearer(token)).json()
    assert (report["ok"], report["first_bad_seq"]) == (False, 2)


@pytest.mark.req("L6", "L8", "Z5")
def test_metrics_show_routes_by_template_and_the_security_signals(
    client: TestClient, make_user: Callable[..., User]
) -> None:
    make_user("root", roles=("admin",))
    bob = make_user("bob")
    client.post("/auth/login", json={"username": "bob", "password": "wrong-password"})
    token = _token(client, "root")
    client.patch(f"/admin/users/{bob.id}", json={"active": False}, headers=bearer(token))
    client.get("/no/such/path/abc123")
    verify = client.get("/verify", headers={"X-Forwarded-Uri": "/x", "X-Forwarded-Method": "GET"})
    assert verify.status_code == 401  # the framework-free hot path is counted too
    response = client.get("/metrics", headers=bearer(token))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert 'route="/admin/users/{user_id}"' in text
    assert bob.id not in text  # the raw path never becomes a label
    assert 'route="<unmatched>"' in text
    assert 'garrison_http_requests_total{method="GET",route="/verify",status="401"} 1.0' in text
    assert "abc123" not in text
    assert 'garrison_auth_failures_total{reason="bad password"} 1.0' in text
    assert 'garrison_admin_actions_total{action="admin.user.disable"} 1.0' in text
    assert "garrison_http_request_duration_seconds_bucket" in text
    assert "garrison_audit_backlog 0.0" in text


@pytest.mark.req("A7", "Z5")
def test_an_api_key_alone_cannot_read_metrics_when_jwt_is_required(
    make_settings: MakeSettings,
) -> None:
    with _client(make_settings, REQUIRE_JWT_FOR_ADMIN="true") as client:
        svc = client.app.services  # type: ignore[attr-defined]
        root = svc.users.create("root", "correct horse battery staple", roles=("admin",))
        secret, _ = svc.api_keys.create(root.id, ("metrics.read",), tenant=None)
        response = client.get("/metrics", headers=bearer(secret))
        assert response.status_code == 403
        assert response.json()["reasons"] == ["admin requires a JWT"]


@pytest.mark.req("L8")
def test_metrics_can_be_made_public_for_network_restricted_setups(
    make_settings: MakeSettings,
) -> None:
    with _client(make_settings, GARRISON_METRICS_PUBLIC="true") as client:
        response = client.get("/metrics")
        assert response.status_code == 200
        assert "garrison_http_requests_total" in response.text


@pytest.mark.req("L2", "L3")
def test_every_api_key_use_is_audited_once_per_key_and_second_without_the_key(
    make_settings: MakeSettings,
) -> None:
    now = [1_900_000_000.25]
    svc = build_services(make_settings(), clock=lambda: now[0])
    try:
        bob = svc.users.create("bob", "correct horse battery staple", roles=("user",))
        first, key_a = svc.api_keys.create(bob.id, ("read",), tenant=None)
        second, key_b = svc.api_keys.create(bob.id, ("read",), tenant=None)
        with TestClient(create_app(svc), base_url="http://127.0.0.1") as client:
            # within one second, a cache hit or not: every use counts
            for _ in range(3):
                assert client.get("/auth/me", headers=bearer(first)).status_code == 200
            assert client.get("/auth/me", headers=bearer(second)).status_code == 200
            now[0] += 1.0
            for _ in range(2):
                assert client.get("/auth/me", headers=bearer(first)).status_code == 200
            forged = first[:-4] + "AAAA"
            assert client.get("/auth/me", headers=bearer(forged)).status_code == 401
        # leaving the client drained the pipeline: the last second's aggregates are written too
        with svc.db.engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT action, outcome, actor, reason, details, request_id FROM audit_log "
                    "WHERE action IN ('auth.api_key', 'gateway.api_key_use', 'auth.refused') "
                    "ORDER BY seq"
                )
            ).all()
    finally:
        svc.close()
    uses = [r for r in rows if r.action == "auth.api_key"]
    seen = [(r.outcome, r.actor, _details(r)["authenticated_by"]["id"], _details(r)["count"])
            for r in uses]  # fmt: skip
    assert seen == [
        ("success", bob.id, key_a.id, 3),
        ("success", bob.id, key_b.id, 1),
        ("success", bob.id, key_a.id, 2),
    ]
    assert [_details(r)["second"] for r in uses] == [1_900_000_000, 1_900_000_000, 1_900_000_001]
    assert all(_details(r)["actions"] == {"auth.self": _details(r)["count"]} for r in uses)
    assert all(r.request_id for r in uses)
    # a failure is the refusal path's record alone: no second record kind, no duplicate
    (refused,) = [r for r in rows if r.action == "auth.refused"]
    assert (refused.outcome, _details(refused)["code"]) == ("failure", "invalid_api_key")
    assert not [r for r in rows if r.action == "gateway.api_key_use"]
    assert first not in str(rows)
    assert second not in str(rows)


def _details(row: Any) -> dict[str, Any]:
    details = row.details
    parsed: dict[str, Any] = json.loads(details) if isinstance(details, str) else dict(details)
    return parsed


@pytest.mark.req("L8")
def test_healthz_is_minimal_and_readyz_checks_the_database(client: TestClient) -> None:
    health = client.get("/healthz")
    assert (health.status_code, health.json()) == (200, {"status": "ok"})
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ok", "checks": {"database": "ok", "redis": "disabled"}}


@pytest.mark.req("L8")
def test_readyz_is_503_when_redis_is_configured_but_down(make_settings: MakeSettings) -> None:
    closed = f"redis://127.0.0.1:{free_port()}/0"
    with _client(make_settings, REDIS_URL=closed) as client:
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json() == {
            "status": "unavailable",
            "checks": {"database": "ok", "redis": "unavailable"},
        }
        assert client.get("/healthz").status_code == 200
