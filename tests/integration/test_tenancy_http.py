"""Tenancy and authorization over HTTP (T1, T2, T3, Z3, Z5): every cross-tenant probe fails closed.

Users: root (platform admin), pat (platform support), ada (acme admin), sam (acme support), gil
(globex admin), gus (globex user), and unscoped plain users.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx2
import pytest
import sqlalchemy as sa
from starlette.testclient import TestClient

from garrison.app import Services, build_services
from garrison.gateway.asgi import create_app
from garrison.identity.users import User
from garrison.storage.schema import audit_log
from tests.conftest import PASSWORD, MakeSettings, bearer, login

MakeUser = Callable[..., User]


@pytest.fixture
def people(make_user: MakeUser) -> dict[str, User]:
    return {
        "root": make_user("root", roles=("admin",)),
        "pat": make_user("pat", roles=("support",)),
        "ada": make_user("ada", roles=("admin",), tenant="acme"),
        "sam": make_user("sam", roles=("support",), tenant="acme"),
        "gil": make_user("gil", roles=("admin",), tenant="globex"),
        "gus": make_user("gus", roles=("user",), tenant="globex"),
        "una": make_user("una", roles=("user",)),
    }


def _auth(client: TestClient, name: str, tenant: str | None = None) -> dict[str, str]:
    headers = bearer(login(client, name)["access_token"])
    if tenant is not None:
        headers["X-Tenant-ID"] = tenant
    return headers


def _denied(response: httpx2.Response, reason: str) -> None:
    assert response.status_code == 403, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["reasons"][0] == reason
    assert response.headers["x-auth-deny-reason"] == reason


def _audit(services: Services, action: str) -> list[Any]:
    with services.db.begin() as conn:
        return list(conn.execute(sa.select(audit_log).where(audit_log.c.action == action)))


# -- T1: the header must match the token ---------------------------------------------------------
@pytest.mark.req("T1", "L2", "L6")
def test_t1_a_header_naming_another_tenant_is_refused_and_audited(
    client: TestClient, services: Services, people: dict[str, User]
) -> None:
    assert client.get("/auth/me", headers=_auth(client, "sam", "acme")).json()["tenant"] == "acme"
    _denied(client.get("/auth/me", headers=_auth(client, "sam", "globex")), "tenant mismatch")
    _denied(client.get("/admin/users", headers=_auth(client, "ada", "globex")), "tenant mismatch")
    denies = _audit(services, "authz.deny")
    assert [row.reason for row in denies] == ["tenant mismatch", "tenant mismatch"]
    assert {row.actor for row in denies} == {people["sam"].id, people["ada"].id}
    assert services.metrics.policy_denies.labels("tenant mismatch")._value.get() == 2


@pytest.mark.req("T1")
def test_t1_only_a_platform_admin_may_name_a_tenant(
    client: TestClient, people: dict[str, User]
) -> None:
    _denied(client.get("/auth/me", headers=_auth(client, "pat", "acme")), "tenant mismatch")
    listed = client.get("/admin/users", headers=_auth(client, "root", "acme"))
    assert listed.status_code == 200
    assert {u["username"] for u in listed.json()["users"]} == {"ada", "sam"}


# -- T2: REQUIRE_TENANT_HEADER -------------------------------------------------------------------
@pytest.fixture
def strict_client(make_settings: MakeSettings) -> Iterator[tuple[TestClient, Services]]:
    svc = build_services(make_settings(REQUIRE_TENANT_HEADER="true"))
    try:
        with TestClient(create_app(svc), base_url="http://127.0.0.1") as client:
            yield client, svc
    finally:
        svc.close()


@pytest.mark.req("T2")
def test_t2_a_tenant_identity_without_the_header_is_refused(
    strict_client: tuple[TestClient, Services],
) -> None:
    client, svc = strict_client
    svc.users.create("sam", PASSWORD, roles=("support",), tenant="acme")
    pair = login(client, "sam")  # login stays public: no header needed
    refreshed = client.post("/auth/refresh", json={"refresh_token": pair["refresh_token"]})
    assert refreshed.status_code == 200  # refresh too
    assert client.get("/healthz").status_code == 200
    assert client.get("/.well-known/jwks.json").status_code == 200
    token = bearer(refreshed.json()["access_token"])
    _denied(client.get("/auth/me", headers=token), "missing tenant header")
    _denied(
        client.post("/v1/decide", headers=token, json={"action": "ticket.read"}),
        "missing tenant header",
    )
    assert client.get("/auth/me", headers={**token, "X-Tenant-ID": "acme"}).status_code == 200
    assert client.post("/auth/logout", headers=token).status_code == 204


@pytest.mark.req("T2")
def test_t2_the_header_is_optional_unless_required(
    client: TestClient, people: dict[str, User]
) -> None:
    assert client.get("/auth/me", headers=_auth(client, "sam")).status_code == 200


# -- T3: listings --------------------------------------------------------------------------------
@pytest.mark.req("T3")
def test_t3_a_listing_without_a_tenant_returns_only_unscoped_records(
    client: TestClient, people: dict[str, User]
) -> None:
    platform = client.get("/admin/users", headers=_auth(client, "root")).json()["users"]
    assert {u["username"] for u in platform} == {"root", "pat", "una"}
    assert all(u["tenant"] is None for u in platform)
    acme = client.get("/admin/users", headers=_auth(client, "ada")).json()["users"]
    assert {u["username"] for u in acme} == {"ada", "sam"}
    globex = client.get("/admin/users", headers=_auth(client, "root", "globex")).json()["users"]
    assert {u["username"] for u in globex} == {"gil", "gus"}


# -- T1/T3: every tenant-scoped admin endpoint, probed across tenants ---------------------------
@pytest.mark.req("T1", "T3")
def test_t3_cross_tenant_probes_on_admin_endpoints_fail_closed(
    client: TestClient, services: Services, people: dict[str, User]
) -> None:
    ada = _auth(client, "ada")
    gus = people["gus"]
    _, gus_key = services.api_keys.create(gus.id, ("ticket.read",), tenant="globex")
    probes = [
        client.patch(f"/admin/users/{gus.id}", headers=ada, json={"active": False}),
        client.post(f"/admin/users/{gus.id}/revoke-sessions", headers=ada),
        client.post(
            "/admin/users",
            headers=ada,
            json={"username": "mole", "password": "long enough pw", "tenant": "globex"},
        ),
        client.post("/admin/api-keys", headers=ada, json={"user": gus.id, "scopes": ["x"]}),
        client.delete(f"/admin/api-keys/{gus_key.id}", headers=ada),
        client.post("/admin/keys/rotate", headers=ada, json={}),
    ]
    for response in probes[:5]:
        _denied(response, "tenant mismatch")
    assert probes[5].status_code == 403  # signing keys are platform-wide
    assert services.users.get(gus.id).active
    assert services.users.find("mole") is None
    assert services.api_keys.get(gus_key.id).revoked_at is None


@pytest.mark.req("T1", "T3")
def test_t3_a_platform_admin_acts_in_a_tenant_only_by_naming_it(
    client: TestClient, services: Services, people: dict[str, User]
) -> None:
    gus = people["gus"]
    root = _auth(client, "root")
    _denied(client.post(f"/admin/users/{gus.id}/revoke-sessions", headers=root), "tenant mismatch")
    named = client.post(
        f"/admin/users/{gus.id}/revoke-sessions", headers={**root, "X-Tenant-ID": "globex"}
    )
    assert named.status_code == 200
    wrong = client.patch(
        f"/admin/users/{gus.id}", headers={**root, "X-Tenant-ID": "acme"}, json={"active": False}
    )
    _denied(wrong, "tenant mismatch")
    assert services.users.get(gus.id).active


@pytest.mark.req("T1", "T3")
def test_t3_a_tenant_admin_manages_its_own_tenant(
    client: TestClient, services: Services, people: dict[str, User]
) -> None:
    ada = _auth(client, "ada", "acme")
    made = client.post(
        "/admin/users", headers=ada, json={"username": "newbie", "password": "long enough pw"}
    )
    assert made.status_code == 201
    assert made.json()["tenant"] == "acme"
    sam = people["sam"]
    assert (
        client.patch(f"/admin/users/{sam.id}", headers=ada, json={"active": False}).status_code
        == 200
    )
    # and cannot reach a platform account either
    _denied(
        client.patch(f"/admin/users/{people['una'].id}", headers=ada, json={"active": False}),
        "tenant mismatch",
    )


# -- Z5: admin-only surfaces ----------------------------------------------------------------------
@pytest.mark.req("Z5", "L2")
def test_admin_endpoints_refuse_other_roles_with_a_reason(
    client: TestClient, services: Services, people: dict[str, User]
) -> None:
    response = client.get("/admin/users", headers=_auth(client, "sam"))
    _denied(response, "role mismatch: admin.users.list requires admin")
    assert [r.reason for r in _audit(services, "authz.deny")] == [
        "role mismatch: admin.users.list requires admin"
    ]


# -- Z3: /v1/decide --------------------------------------------------------------------------------
def _decide(client: TestClient, headers: dict[str, str], **body: Any) -> httpx2.Response:
    return client.post("/v1/decide", headers=headers, json=body)


@pytest.mark.req("Z3")
def test_decide_explains_the_callers_own_denies(
    client: TestClient, services: Services, people: dict[str, User]
) -> None:
    sam = _auth(client, "sam")
    version = services.authorizer.version
    cases: list[tuple[dict[str, Any], bool, list[str]]] = [
        ({"action": "ticket.close"}, False, ["missing parameter: reason"]),
        ({"action": "ticket.close", "params": {"reason": "fixed"}}, True, []),
        (
            {"action": "user.delete", "params": {"reason": "gdpr"}},
            False,
            ["role mismatch: user.delete requires admin"],
        ),
        ({"action": "x"}, False, ["unknown action: x"]),
        (
            {
                "action": "ticket.comment",
                "resource": {"type": "ticket", "id": "1", "tenant": "globex"},
            },
            False,
            ["tenant mismatch"],
        ),
    ]
    for body, allow, reasons in cases:
        response = _decide(client, sam, **body)
        assert response.status_code == 200, response.text
        assert response.json() == {"allow": allow, "reasons": reasons, "policy_version": version}
    decided = _audit(services, "authz.decide")
    assert len(decided) == len(cases)
    assert [row.outcome for row in decided] == ["deny", "success", "deny", "deny", "deny"]
    assert _audit(services, "authz.deny") == []  # explanations, not enforcement


@pytest.mark.req("Z3", "T1")
def test_decide_about_another_subject_needs_admin_or_service(
    client: TestClient, people: dict[str, User]
) -> None:
    other = {"id": "u-9", "roles": ["support"], "tenant": "acme"}
    _denied(
        _decide(client, _auth(client, "sam"), subject=other, action="user.delete"),
        "role mismatch: policy.decide.other requires admin or service",
    )
    _denied(
        _decide(client, _auth(client, "gil"), subject=other, action="user.delete"),
        "tenant mismatch",
    )
    answer = _decide(
        client, _auth(client, "ada"), subject=other, action="user.delete", params={"reason": "gdpr"}
    )
    assert answer.json()["reasons"] == ["role mismatch: user.delete requires admin"]
    platform = _decide(
        client,
        _auth(client, "root"),
        subject=other,
        action="ticket.comment",
        resource={"tenant": "globex"},
    )
    assert platform.json()["reasons"] == ["tenant mismatch"]


@pytest.mark.req("Z3", "E7")
def test_decide_needs_credentials_and_a_valid_body(
    client: TestClient, people: dict[str, User]
) -> None:
    assert client.post("/v1/decide", json={"action": "ticket.read"}).status_code == 401
    sam = _auth(client, "sam")
    assert client.post("/v1/decide", headers=sam, json={"action": ""}).status_code == 422
    assert (
        client.post("/v1/decide", headers=sam, json={"action": "a", "extra": 1}).status_code == 422
    )
