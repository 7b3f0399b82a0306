"""One enforcement point (issue 8): every route, Garrison's own included, admitted by one pipeline
and decided by one policy. Each test is an attack that got through before the pipeline existed."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import anyio
import pytest
import sqlalchemy as sa
from starlette.testclient import TestClient

from garrison.app import Services, build_services
from garrison.config.settings import RouteDef
from garrison.gateway.asgi import create_app
from garrison.identity.users import User
from tests.conftest import PASSWORD, MakeSettings, bearer, login

ROUTES = [
    RouteDef(prefix="/api/tickets", action="ticket.comment"),
    RouteDef(prefix="/api/admin-tools", action="user.delete"),
]


@dataclass
class World:
    svc: Services
    http: TestClient
    root: User  # platform admin
    victim: User  # a platform user the attacks aim at
    victim_key_id: str

    def user(self, name: str, **kwargs: Any) -> User:
        return self.svc.users.create(name, PASSWORD, **kwargs)

    def key(self, owner: User, *scopes: str) -> str:
        secret, _ = self.svc.api_keys.create(owner.id, scopes, tenant=owner.tenant)
        return secret

    def rows(self, action: str) -> list[Any]:
        # anonymous refusals are aggregated per second: write what is pending first
        anyio.run(lambda: self.svc.admission.refusals.flush(everything=True))
        with self.svc.db.engine.connect() as conn:
            found = conn.execute(
                sa.text(
                    "SELECT actor, reason, details, tenant FROM audit_log "
                    "WHERE action = :a ORDER BY seq"
                ),
                {"a": action},
            ).all()
        return [(r.actor, r.reason, _json(r.details), r.tenant) for r in found]


def _json(value: Any) -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(value) if isinstance(value, str) else value
    return parsed


def _world(make_settings: MakeSettings, **overrides: Any) -> Iterator[World]:
    svc = build_services(
        make_settings(routes=ROUTES, GARRISON_TRUSTED_PROXIES="127.0.0.0/8", **overrides)
    )
    svc.keyring.load()
    root = svc.users.create("root", PASSWORD, roles=("admin",))
    victim = svc.users.create("victim", PASSWORD, roles=("user",))
    _, key = svc.api_keys.create(victim.id, ("ticket.read",), tenant=None)
    with TestClient(create_app(svc), base_url="http://127.0.0.1") as http:
        yield World(svc, http, root, victim, key.id)
    svc.close()


@pytest.fixture
def world(make_settings: MakeSettings) -> Iterator[World]:
    yield from _world(make_settings, REQUIRE_JWT_FOR_ADMIN="false")


@pytest.fixture
def strict_world(make_settings: MakeSettings) -> Iterator[World]:
    yield from _world(make_settings, REQUIRE_JWT_FOR_ADMIN="true")


#: Every own endpoint that needs more than a plain identity: (method, path, body, headers, action)
Route = tuple[str, str, dict[str, Any] | None, dict[str, str], str]


def own_routes(w: World) -> list[Route]:
    v, k = w.victim.id, w.victim_key_id
    return [
        ("GET", "/admin/users", None, {}, "admin.users.list"),
        (
            "POST",
            "/admin/users",
            {"username": "mallory2", "password": "a long password", "roles": ["admin"]},
            {},
            "admin.users.create",
        ),
        ("PATCH", f"/admin/users/{v}", {"active": False}, {}, "admin.users.update"),
        ("PATCH", f"/admin/users/{v}", {"roles": ["admin"]}, {}, "admin.users.update"),
        ("DELETE", f"/admin/users/{v}", {"reason": "gdpr"}, {}, "admin.users.delete"),
        ("GET", f"/admin/users/{v}/export", None, {}, "admin.users.export"),
        ("POST", f"/admin/users/{v}/revoke-sessions", None, {}, "admin.users.revoke_sessions"),
        ("GET", f"/admin/api-keys?user={v}", None, {}, "admin.api_keys.list"),
        ("POST", "/admin/api-keys", {"user": v, "scopes": ["*"]}, {}, "admin.api_keys.create"),
        ("DELETE", f"/admin/api-keys/{k}", None, {}, "admin.api_keys.revoke"),
        ("POST", "/admin/keys/rotate", {"emergency": True}, {}, "admin.keys.rotate"),
        ("GET", "/admin/audit", None, {}, "audit.read"),
        ("GET", "/admin/audit/verify", None, {}, "audit.verify"),
        ("GET", "/metrics", None, {}, "metrics.read"),
        ("PUT", "/v1/secrets/db", {"value": "s3cret"}, {}, "secret.write"),
        ("GET", "/v1/secrets/db", None, {"X-Justification": "INC-1"}, "secret.read"),
        ("DELETE", "/v1/secrets/db", None, {"X-Reason": "cleanup"}, "secret.delete"),
    ]


def call(w: World, route: Route, credential: str) -> Any:
    method, path, body, headers, _action = route
    return w.http.request(
        method, path, json=body, headers={"Authorization": f"Bearer {credential}", **headers}
    )


def _untouched(w: World, kids_before: int) -> None:
    victim = w.svc.users.get(w.victim.id)
    assert victim.active
    assert victim.roles == ("user",)
    assert w.svc.api_keys.get(w.victim_key_id).revoked_at is None
    assert w.svc.users.find("mallory2") is None
    assert len(w.svc.keyring.list()) == kids_before


@pytest.mark.req("A7", "Z2", "Z3", "Z5")
def test_a_scoped_key_of_an_admin_is_refused_on_every_admin_route(world: World) -> None:
    """An admin's API key scoped to ``ticket.read`` created admin users, issued a ``*`` key and
    rotated the signing keys: the role check on /admin never looked at the key's scopes."""
    key = world.key(world.root, "ticket.read")
    kids = len(world.svc.keyring.list())
    for route in own_routes(world):
        action = route[4]
        response = call(world, route, key)
        assert response.status_code == 403, (route, response.text)
        reason = f"scope mismatch: the API key does not cover {action}"
        assert reason in response.json()["reasons"], (route, response.json())
        assert response.headers["x-auth-deny-reason"] == response.json()["reasons"][0]
    _untouched(world, kids)
    assert len(world.rows("authz.deny")) == len(own_routes(world))


@pytest.mark.req("A7", "Z3", "L2")
def test_require_jwt_for_admin_refuses_an_admin_key_on_every_admin_route(
    strict_world: World,
) -> None:
    w = strict_world
    key = w.key(w.root, "*")
    kids = len(w.svc.keyring.list())
    for route in own_routes(w):
        response = call(w, route, key)
        assert response.status_code == 403, (route, response.text)
        assert response.json()["reasons"] == ["admin requires a JWT"], route
    _untouched(w, kids)
    denies = w.rows("authz.deny")  # the refusal is audited (it was not before)
    assert len(denies) == len(own_routes(w))
    assert {d[1] for d in denies} == {"admin requires a JWT"}
    assert all(d[0] == w.root.id for d in denies)
    assert all(d[2]["authenticated_by"]["type"] == "api_key" for d in denies)


@pytest.mark.req("Z5", "T1", "L8")
@pytest.mark.parametrize(
    ("method", "path", "action"),
    [
        ("GET", "/metrics", "metrics.read"),
        ("GET", "/admin/audit/verify", "audit.verify"),
        ("POST", "/admin/keys/rotate", "admin.keys.rotate"),
    ],
)
def test_a_tenant_admin_is_refused_platform_wide_actions(
    world: World, method: str, path: str, action: str
) -> None:
    world.user("ten", roles=("admin",), tenant="acme")
    token = login(world.http, "ten")["access_token"]
    response = world.http.request(method, path, headers=bearer(token), json={})
    assert response.status_code == 403, response.text
    assert response.json()["reasons"] == [f"platform identity required: {action}"]
    # a platform admin acting in a tenant is not platform-wide either
    root = login(world.http, "root")["access_token"]
    named = world.http.request(
        method, path, headers={**bearer(root), "X-Tenant-ID": "acme"}, json={}
    )
    assert named.status_code == 403
    assert named.json()["reasons"] == [f"platform identity required: {action}"]
    assert world.http.request(method, path, headers=bearer(root), json={}).status_code == 200


@pytest.mark.req("A12", "A4", "A7")
def test_revoke_sessions_ends_the_users_api_keys_too(world: World) -> None:
    """``revoke-sessions`` said "live tokens are dead" while the user's API keys kept working."""
    alice = world.user("alice", roles=("support",))
    key = world.key(alice, "ticket.comment")
    pair = login(world.http, "alice")
    through = {"X-Original-Method": "POST", "X-Original-URI": "/api/tickets/1"}
    assert world.http.get("/verify", headers={**through, **bearer(key)}).status_code == 200
    root = login(world.http, "root")["access_token"]
    done = world.http.post(f"/admin/users/{alice.id}/revoke-sessions", headers=bearer(root))
    assert done.status_code == 200, done.text
    assert done.json()["revoked_api_keys"] == 1
    assert world.http.get("/verify", headers={**through, **bearer(key)}).status_code == 401
    assert world.http.get("/auth/me", headers=bearer(key)).status_code == 401
    assert world.http.get("/auth/me", headers=bearer(pair["access_token"])).status_code == 401
    refresh = world.http.post("/auth/refresh", json={"refresh_token": pair["refresh_token"]})
    assert refresh.status_code == 401


@pytest.mark.req("A12", "A4")
def test_enabling_a_user_never_revives_what_disabling_stopped(world: World) -> None:
    """``users enable`` brought back the API keys that ``disable`` had stopped."""
    bob = world.user("bob", roles=("support",))
    key = world.key(bob, "ticket.comment")
    pair = login(world.http, "bob")
    root = login(world.http, "root")["access_token"]
    off = world.http.patch(f"/admin/users/{bob.id}", json={"active": False}, headers=bearer(root))
    assert off.status_code == 200, off.text
    on = world.http.patch(f"/admin/users/{bob.id}", json={"active": True}, headers=bearer(root))
    assert on.status_code == 200
    time.sleep(1.1)  # past the 1 s bound of any cache: only the revocation can refuse now
    assert world.http.get("/auth/me", headers=bearer(key)).status_code == 401
    assert world.http.get("/auth/me", headers=bearer(pair["access_token"])).status_code == 401
    refresh = world.http.post("/auth/refresh", json={"refresh_token": pair["refresh_token"]})
    assert refresh.status_code == 401
    assert world.http.get("/auth/me", headers=bearer(login(world.http, "bob")["access_token"]))


@pytest.mark.req("L2", "L3", "Z3")
def test_one_deny_is_audited_identically_from_verify_and_from_admin(world: World) -> None:
    """The same deny was audited with actor = key id on one path and user id on the other, the
    first reason on one and all on the other."""
    world.user("uma", roles=("user",))
    pair = login(world.http, "uma")
    jti = world.svc.codec.verify(pair["access_token"])["jti"]
    headers = bearer(pair["access_token"])
    edge = world.http.get(
        "/verify",
        headers={**headers, "X-Original-Method": "POST", "X-Original-URI": "/api/admin-tools/x"},
    )
    own = world.http.get("/admin/users", headers=headers)
    assert edge.status_code == own.status_code == 403
    (at_edge, at_admin) = world.rows("authz.deny")
    for actor, reason, details, _tenant in (at_edge, at_admin):
        assert actor == world.svc.users.find("uma").id  # type: ignore[union-attr]
        assert details["authenticated_by"] == {"type": "jwt", "id": jti}
        assert details["reasons"][0] == reason
        assert set(details) == {"action", "reasons", "authenticated_by", "method", "path"}
    assert at_edge[2]["action"] == "user.delete"
    assert at_edge[1] == "role mismatch: user.delete requires admin"
    assert at_edge[2]["reasons"] == edge.json()["reasons"]  # every reason, not only the first
    assert edge.json()["reasons"] == [
        "role mismatch: user.delete requires admin",
        "missing parameter: reason",
    ]
    assert at_admin[2]["action"] == "admin.users.list"
    assert at_admin[1] == "role mismatch: admin.users.list requires admin"
    # the same metric for both
    sample = world.svc.metrics.registry.get_sample_value(
        "garrison_policy_denies_total", {"reason": "role mismatch"}
    )
    assert sample == 2


@pytest.mark.req("L2", "A3")
def test_rejected_tokens_are_audited_and_a_flood_is_aggregated(world: World) -> None:
    """A rejected bearer token was not audited at all; a flood of garbage must not fill the log."""
    through = {"X-Original-Method": "GET", "X-Original-URI": "/api/tickets/1"}
    for i in range(60):
        response = world.http.get(
            "/verify", headers={**through, "Authorization": f"Bearer garbage.{i}.token"}
        )
        assert response.status_code == 401
    refused = world.rows("auth.refused")
    assert 1 <= len(refused) <= 4  # the first of each second, then one summary per second
    total = sum(r[2]["count"] if r[2].get("aggregated") else 1 for r in refused)
    assert total == 60
    assert all(r[0] is None for r in refused)  # nobody is named by a garbage token


@pytest.mark.req("L2", "A4")
def test_refusals_of_a_known_identity_are_never_aggregated(world: World) -> None:
    dora = world.user("dora", roles=("support",))
    token = login(world.http, "dora")["access_token"]
    world.svc.users.set_active(dora.id, False)
    for _ in range(5):
        assert world.http.get("/auth/me", headers=bearer(token)).status_code == 401
    mine = [r for r in world.rows("auth.refused") if r[0] == dora.id]
    assert len(mine) == 5
    assert {r[2]["code"] for r in mine} == {"inactive_user"}


@pytest.mark.req("E7", "Z1", "A12")
def test_patch_user_roles_are_strict_and_keep_a_platform_admin(world: World) -> None:
    root = login(world.http, "root")["access_token"]
    target = f"/admin/users/{world.victim.id}"
    unknown = world.http.patch(target, json={"roles": ["wizard"]}, headers=bearer(root))
    assert unknown.status_code == 422
    assert unknown.json()["reasons"] == ["roles: 'wizard' is not a defined role"]
    for bad in ({"active": 0}, {"active": "false"}, {"roles": "admin"}, {}):
        response = world.http.patch(target, json=bad, headers=bearer(root))
        assert response.status_code == 422, (bad, response.text)
        assert world.svc.users.get(world.victim.id).active
    demote = world.http.patch(
        f"/admin/users/{world.root.id}", json={"roles": ["user"]}, headers=bearer(root)
    )
    assert demote.status_code == 409
    off = world.http.patch(
        f"/admin/users/{world.root.id}", json={"active": False}, headers=bearer(root)
    )
    assert off.status_code == 409
    promoted = world.http.patch(target, json={"roles": ["support"]}, headers=bearer(root))
    assert promoted.status_code == 200
    assert promoted.json()["roles"] == ["support"]
    (changed,) = world.rows("admin.user.set_roles")
    assert changed[2]["roles"] == ["support"]
    assert changed[2]["previous"] == ["user"]


@pytest.mark.req("V4", "Z3")
def test_export_and_delete_over_http(world: World) -> None:
    root = login(world.http, "root")["access_token"]
    exported = world.http.get(f"/admin/users/{world.victim.id}/export", headers=bearer(root))
    assert exported.status_code == 200
    assert exported.json()["user"]["id"] == world.victim.id
    no_reason = world.http.delete(f"/admin/users/{world.victim.id}", headers=bearer(root))
    assert no_reason.status_code == 403
    assert no_reason.json()["reasons"] == ["missing parameter: reason"]
    gone = world.http.request(
        "DELETE", f"/admin/users/{world.victim.id}", json={"reason": "gdpr"}, headers=bearer(root)
    )
    assert gone.status_code == 204
    assert world.svc.users.find("victim") is None
    (deleted,) = world.rows("admin.user.delete")
    assert deleted[1] == "gdpr"


@pytest.mark.req("T1", "T3")
def test_a_tenant_admin_cannot_reach_a_platform_user(world: World) -> None:
    world.user("ten", roles=("admin",), tenant="acme")
    token = login(world.http, "ten")["access_token"]
    response = world.http.patch(
        f"/admin/users/{world.root.id}", json={"active": False}, headers=bearer(token)
    )
    assert response.status_code == 403
    assert response.json()["reasons"] == ["tenant mismatch"]
    assert world.svc.users.get(world.root.id).active


def _cookie_login(http: TestClient, name: str) -> dict[str, str]:
    response = http.post(
        "/auth/login", json={"username": name, "password": PASSWORD, "session": "cookie"}
    )
    assert response.status_code == 200, response.text
    return dict(http.cookies.items())


@pytest.mark.req("A9", "E8")
def test_a_cookie_session_authenticates_at_verify_with_csrf_rules(world: World) -> None:
    """A browser session reached Garrison's API but not a backend: /verify ignored the cookie."""
    world.user("cora", roles=("support",))
    cookies = _cookie_login(world.http, "cora")
    world.http.cookies.clear()
    jar = "; ".join(f"{k}={v}" for k, v in cookies.items())
    csrf = cookies["__Host-garrison_csrf"]
    read = world.http.get(
        "/verify",
        headers={"X-Original-Method": "GET", "X-Original-URI": "/api/tickets/1", "Cookie": jar},
    )
    assert read.status_code == 200, read.text
    assert read.headers["x-auth-user"] == "cora"
    post = {"X-Original-Method": "POST", "X-Original-URI": "/api/tickets/1", "Cookie": jar}
    refused = world.http.get("/verify", headers=post)
    assert refused.status_code == 403
    assert refused.json()["reasons"] == ["csrf token missing or invalid"]
    cross = world.http.get(
        "/verify", headers={**post, "X-CSRF-Token": csrf, "Sec-Fetch-Site": "cross-site"}
    )
    assert cross.status_code == 403
    ok = world.http.get(
        "/verify", headers={**post, "X-CSRF-Token": csrf, "Sec-Fetch-Site": "same-origin"}
    )
    assert ok.status_code == 200, ok.text
    assert [r[2]["authenticated_by"]["type"] for r in world.rows("auth.csrf")] == ["session"] * 2
    # the same revocation bound as at the API
    world.svc.users.revoke_sessions(world.svc.users.find("cora").id)  # type: ignore[union-attr]
    gone = world.http.get(
        "/verify",
        headers={"X-Original-Method": "GET", "X-Original-URI": "/api/tickets/1", "Cookie": jar},
    )
    assert gone.status_code == 401


@pytest.mark.req("A9")
def test_an_api_key_planted_in_the_session_cookie_is_refused_at_verify(world: World) -> None:
    key = world.key(world.root, "*")
    response = world.http.get(
        "/verify",
        headers={
            "X-Original-Method": "GET",
            "X-Original-URI": "/api/tickets/1",
            "Cookie": f"__Host-garrison_session={key}",
        },
    )
    assert response.status_code == 401


def _key_principal_roles(w: World, key: str) -> Callable[[], str]:
    def roles() -> str:
        response = w.http.get(
            "/verify",
            headers={
                "X-Original-Method": "POST",
                "X-Original-URI": "/api/tickets/1",
                **bearer(key),
            },
        )
        assert response.status_code == 200, response.text
        return str(response.headers["x-auth-roles"])

    return roles


@pytest.mark.req("A7", "T1")
def test_upstreams_are_told_the_roles_the_policy_granted(strict_world: World) -> None:
    """Under REQUIRE_JWT_FOR_ADMIN an admin's key is not admin anywhere, and X-Auth-Roles says so."""
    lead = strict_world.user("lead", roles=("admin", "support"))
    key = strict_world.key(lead, "*")
    assert _key_principal_roles(strict_world, key)() == "support"
