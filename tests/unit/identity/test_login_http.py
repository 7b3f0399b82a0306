"""Login, refresh, logout and incident response over HTTP, including the attacks each check stops
(A1, A4, A5, A7, A8, A12, A13, E7)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator

import pytest
from starlette.testclient import TestClient

from garrison.app import Services, build_services
from garrison.gateway.asgi import create_app
from garrison.identity.users import User
from tests.conftest import PASSWORD, MakeSettings, bearer, login
from tests.support import create_pg_database, drop_pg_database, redis_client, redis_prefix

MakeUser = Callable[..., User]


def _login(client: TestClient, username: str, password: str, ip: str = "testclient") -> int:
    return client.post("/auth/login", json={"username": username, "password": password}).status_code


@pytest.mark.req("A1")
def test_failures_look_alike_for_unknown_and_known_users(
    client: TestClient, make_user: MakeUser
) -> None:
    make_user("alice")
    unknown = client.post("/auth/login", json={"username": "mallory", "password": "whatever1"})
    wrong = client.post("/auth/login", json={"username": "alice", "password": "whatever1"})
    assert unknown.status_code == wrong.status_code == 401
    assert unknown.json() == wrong.json()
    assert unknown.headers["content-type"] == "application/problem+json"


@pytest.mark.argon2_cost
@pytest.mark.req("A1")
def test_failures_take_comparable_time(client: TestClient, make_user: MakeUser) -> None:
    make_user("alice")

    def median(username: str) -> float:
        samples = []
        for _ in range(5):
            start = time.perf_counter()
            client.post("/auth/login", json={"username": username, "password": "not-it-123"})
            samples.append(time.perf_counter() - start)
        return statistics.median(samples)

    known, unknown = median("alice"), median("nobody")
    # both pay for one argon2id verify; an early return for unknown users would be ~100x faster
    assert unknown > known * 0.5
    assert known > unknown * 0.5


@pytest.mark.req("A1")
def test_disabled_user_cannot_log_in_with_the_right_password(
    client: TestClient, make_user: MakeUser, services: Services
) -> None:
    user = make_user("alice")
    services.users.set_active(user.id, False)
    response = client.post("/auth/login", json={"username": "alice", "password": PASSWORD})
    assert response.status_code == 401
    assert response.json()["detail"] == "invalid username or password"


@pytest.mark.req("A1")
def test_there_is_no_default_user(client: TestClient) -> None:
    for username, password in [("admin", "admin"), ("admin", "changeme"), ("root", "root")]:
        assert _login(client, username, password) == 401


@pytest.mark.req("A2")
def test_login_answers_the_contract(client: TestClient, make_user: MakeUser) -> None:
    make_user("alice", email="alice@example.test", roles=("support",), tenant="acme")
    body = login(client, "alice")
    assert set(body) == {"access_token", "token_type", "expires_in", "refresh_token"}
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 900
    me = client.get("/auth/me", headers={**bearer(body["access_token"]), "X-Tenant-ID": "acme"})
    assert me.json() == {
        "sub": me.json()["sub"],
        "username": "alice",
        "email": "alice@example.test",
        "roles": ["support"],
        "tenant": "acme",
    }


@pytest.mark.req("A13")
def test_account_throttle_answers_429_with_retry_after(
    client: TestClient, make_user: MakeUser
) -> None:
    make_user("alice")
    codes = [_login(client, "alice", f"wrong-{i}") for i in range(5)]
    assert codes == [401] * 5
    blocked = client.post("/auth/login", json={"username": "alice", "password": PASSWORD})
    assert blocked.status_code == 429  # even the right password: the account is locked out
    assert 1 <= int(blocked.headers["retry-after"]) <= 900


@pytest.mark.req("A13")
def test_successful_logins_do_not_count_toward_the_throttle(
    client: TestClient, make_user: MakeUser
) -> None:
    make_user("alice")
    for _ in range(8):
        assert _login(client, "alice", PASSWORD) == 200


@pytest.mark.req("A13")
def test_ip_throttle_stops_spraying_across_accounts(
    make_settings: MakeSettings,
) -> None:
    svc = build_services(make_settings(GARRISON_LOGIN_MAX_FAILURES_PER_IP=4))
    with TestClient(create_app(svc)) as client:
        codes = [_login(client, f"user{i}", "guess-123") for i in range(6)]
    svc.close()
    assert codes[:4] == [401] * 4
    assert codes[4:] == [429, 429]


@pytest.fixture
def two_replicas(make_settings: MakeSettings) -> Iterator[list[Services]]:
    """Two service instances sharing one (fresh) PostgreSQL database and one Redis."""
    redis_client()
    url = create_pg_database()
    settings = make_settings(
        DATABASE_URL=url,
        REDIS_URL="redis://127.0.0.1:6379/0",
        USE_REDIS_LIMITER=True,
        GARRISON_REDIS_PREFIX=redis_prefix(),
    )
    replicas = [build_services(settings) for _ in range(2)]
    yield replicas
    for svc in replicas:
        svc.close()
    drop_pg_database(url)


@pytest.mark.req("A13", "E3")
def test_login_throttle_is_shared_through_redis(two_replicas: list[Services]) -> None:
    two_replicas[0].users.create("alice", PASSWORD)
    first, second = (create_app(svc) for svc in two_replicas)
    with TestClient(first) as a, TestClient(second) as b:
        codes = [_login(a if i % 2 else b, "alice", "nope-1234") for i in range(5)]
        assert codes == [401] * 5
        assert _login(a, "alice", PASSWORD) == 429


@pytest.mark.req("A13")
def test_redis_down_makes_login_fail_closed(make_settings: MakeSettings) -> None:
    svc = build_services(make_settings(REDIS_URL="redis://127.0.0.1:1/0", USE_REDIS_LIMITER=True))
    svc.users.create("alice", PASSWORD)
    with TestClient(create_app(svc)) as client:
        response = client.post("/auth/login", json={"username": "alice", "password": PASSWORD})
    svc.close()
    assert response.status_code == 503
    assert "access_token" not in response.text


@pytest.mark.req("A13")
def test_failed_and_successful_logins_are_audited(
    client: TestClient, make_user: MakeUser, services: Services
) -> None:
    import sqlalchemy as sa

    from garrison.storage.schema import audit_log

    make_user("alice")
    _login(client, "alice", "wrong-pass")
    _login(client, "alice", PASSWORD)
    with services.db.begin() as conn:
        rows = conn.execute(
            sa.select(audit_log.c.action, audit_log.c.outcome).where(
                audit_log.c.action == "auth.login"
            )
        ).all()
    assert [tuple(r) for r in rows] == [("auth.login", "failure"), ("auth.login", "success")]


@pytest.mark.req("A5")
def test_refresh_rotates_and_reuse_revokes_the_family(
    client: TestClient, make_user: MakeUser
) -> None:
    make_user("alice")
    first = login(client, "alice")
    second = client.post("/auth/refresh", json={"refresh_token": first["refresh_token"]}).json()
    assert second["refresh_token"] != first["refresh_token"]
    assert client.get("/auth/me", headers=bearer(second["access_token"])).status_code == 200
    # an attacker replays the stolen first token
    replay = client.post("/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert replay.status_code == 401
    assert replay.json()["type"].endswith("refresh_reuse")
    # the legitimate holder's newest tokens are dead as well
    assert (
        client.post("/auth/refresh", json={"refresh_token": second["refresh_token"]}).status_code
        == 401
    )
    assert client.get("/auth/me", headers=bearer(second["access_token"])).status_code == 401


@pytest.mark.req("A13")
def test_refresh_is_throttled_per_ip(make_settings: MakeSettings) -> None:
    svc = build_services(make_settings(GARRISON_REFRESH_MAX_PER_IP=3))
    svc.users.create("alice", PASSWORD)
    with TestClient(create_app(svc)) as client:
        token = login(client, "alice")["refresh_token"]
        codes = []
        for _ in range(4):
            response = client.post("/auth/refresh", json={"refresh_token": token})
            codes.append(response.status_code)
            if response.status_code == 200:
                token = response.json()["refresh_token"]
        assert codes == [200, 200, 200, 429]
        assert int(response.headers["retry-after"]) >= 1
    svc.close()


@pytest.mark.req("A5")
def test_logout_revokes_the_session(client: TestClient, make_user: MakeUser) -> None:
    make_user("alice")
    tokens = login(client, "alice")
    out = client.post("/auth/logout", headers=bearer(tokens["access_token"]))
    assert out.status_code == 204
    assert client.get("/auth/me", headers=bearer(tokens["access_token"])).status_code == 401
    assert (
        client.post("/auth/refresh", json={"refresh_token": tokens["refresh_token"]}).status_code
        == 401
    )


@pytest.mark.req("A5")
def test_logout_with_another_users_refresh_token_leaves_that_session_alone(
    client: TestClient, make_user: MakeUser, services: Services
) -> None:
    """A's Bearer with B's refresh token in the body used to revoke B's whole family: anyone
    holding a copy of a token could end its owner's session. The foreign token is ignored (and
    audited); only A's own session ends."""
    import sqlalchemy as sa

    from garrison.storage.schema import audit_log

    make_user("alice")
    make_user("bob")
    alice, bob = login(client, "alice"), login(client, "bob")
    out = client.post(
        "/auth/logout",
        headers=bearer(alice["access_token"]),
        json={"refresh_token": bob["refresh_token"]},
    )
    assert out.status_code == 204
    assert client.get("/auth/me", headers=bearer(alice["access_token"])).status_code == 401
    assert client.get("/auth/me", headers=bearer(bob["access_token"])).status_code == 200
    again = client.post("/auth/refresh", json={"refresh_token": bob["refresh_token"]})
    assert again.status_code == 200, again.text
    with services.db.begin() as conn:
        details = conn.execute(
            sa.select(audit_log.c.details).where(audit_log.c.action == "auth.logout")
        ).scalar_one()
    assert details["ignored"] == "refresh token of another user"
    assert len(details["sids"]) == 1


@pytest.mark.req("A5")
def test_logout_with_the_users_own_refresh_token_ends_that_session_too(
    client: TestClient, make_user: MakeUser
) -> None:
    make_user("alice")
    phone, laptop = login(client, "alice"), login(client, "alice")
    out = client.post(
        "/auth/logout",
        headers=bearer(phone["access_token"]),
        json={"refresh_token": laptop["refresh_token"]},
    )
    assert out.status_code == 204
    for tokens in (phone, laptop):
        assert client.get("/auth/me", headers=bearer(tokens["access_token"])).status_code == 401


@pytest.mark.req("A4")
def test_disabled_users_live_token_is_refused_at_once(
    client: TestClient, make_user: MakeUser, services: Services
) -> None:
    user = make_user("alice")
    tokens = login(client, "alice")
    assert client.get("/auth/me", headers=bearer(tokens["access_token"])).status_code == 200
    services.users.set_active(user.id, False)
    response = client.get("/auth/me", headers=bearer(tokens["access_token"]))
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.req("A12")
def test_revoke_sessions_kills_a_token_minted_the_same_second(
    client: TestClient, make_user: MakeUser, services: Services
) -> None:
    user = make_user("alice")
    token = login(client, "alice")["access_token"]
    assert client.get("/auth/me", headers=bearer(token)).status_code == 200  # cached as live
    services.users.revoke_sessions(user.id)  # within the token's first second
    assert client.get("/auth/me", headers=bearer(token)).status_code == 401


@pytest.mark.req("A12")
def test_admin_api_disables_and_revokes(client: TestClient, make_user: MakeUser) -> None:
    make_user("root", roles=("admin",))
    bob = make_user("bob")
    admin = bearer(login(client, "root")["access_token"])
    bob_tokens = login(client, "bob")
    revoked = client.post(f"/admin/users/{bob.id}/revoke-sessions", headers=admin)
    assert revoked.status_code == 200
    assert revoked.json()["revoked_sessions"] == 1
    assert client.get("/auth/me", headers=bearer(bob_tokens["access_token"])).status_code == 401
    fresh = login(client, "bob")
    disabled = client.patch(f"/admin/users/{bob.id}", headers=admin, json={"active": False})
    assert disabled.status_code == 200
    assert disabled.json()["active"] is False
    assert client.get("/auth/me", headers=bearer(fresh["access_token"])).status_code == 401


@pytest.mark.req("A7", "A12")
def test_api_keys_over_http_scoped_and_never_admin(make_settings: MakeSettings) -> None:
    svc = build_services(make_settings(REQUIRE_JWT_FOR_ADMIN=True))
    svc.users.create("root", PASSWORD, roles=("admin",))
    with TestClient(create_app(svc)) as client:
        admin = bearer(login(client, "root")["access_token"])
        made = client.post(
            "/admin/api-keys",
            headers=admin,
            json={"user": "root", "scopes": ["tickets:read"], "expires_in": "90d"},
        )
        assert made.status_code == 201
        key = made.json()["key"]
        assert client.get("/auth/me", headers=bearer(key)).status_code == 200
        refused = client.get("/admin/users", headers=bearer(key))
        assert refused.status_code == 403
        assert refused.json()["reasons"][0] == "admin requires a JWT"
        assert (
            client.delete(f"/admin/api-keys/{made.json()['id']}", headers=admin).status_code == 204
        )
        assert client.get("/auth/me", headers=bearer(key)).status_code == 401
    svc.close()


@pytest.mark.req("Z5", "A7")
def test_non_admins_cannot_reach_admin(client: TestClient, make_user: MakeUser) -> None:
    make_user("bob")
    token = bearer(login(client, "bob")["access_token"])
    response = client.get("/admin/users", headers=token)
    assert response.status_code == 403
    assert response.headers["x-auth-deny-reason"].startswith("role mismatch")
    assert client.get("/admin/users").status_code == 401


@pytest.mark.req("A8")
@pytest.mark.parametrize("param", ["access_token", "token", "api_key", "ACCESS_TOKEN"])
def test_token_in_query_string_is_refused(
    client: TestClient, make_user: MakeUser, param: str
) -> None:
    make_user("alice")
    token = login(client, "alice")["access_token"]
    response = client.get(f"/auth/me?{param}={token}")
    assert response.status_code == 401  # RFC 6750 3.1: no credentials where they are accepted
    assert response.json()["type"].endswith("credentials_in_query")
    assert 'error="invalid_request"' in response.headers["www-authenticate"]
    # next to a valid header the request is malformed: never accepted, and 400 says why
    both = client.get(f"/auth/me?{param}={token}", headers=bearer(token))
    assert both.status_code == 400
    assert both.json()["type"].endswith("credentials_in_query")


@pytest.mark.req("A8")
@pytest.mark.parametrize("header", ["Basic YWxpY2U6cHc=", "Bearer", "Bearer a b", "Token abc", ""])
def test_only_bearer_header_is_accepted(client: TestClient, header: str) -> None:
    response = client.get("/auth/me", headers={"Authorization": header})
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.req("E7")
@pytest.mark.parametrize(
    ("body", "ctype", "status"),
    [
        (b"{not json", "application/json", 400),
        (b'{"username": "a"}', "application/json", 422),
        (b'{"username": 1, "password": []}', "application/json", 422),
        (b"username=a&password=b", "application/x-www-form-urlencoded", 400),
        (b'{"username": "a", "password": "b", "admin": true}', "application/json", 422),
    ],
)
def test_bad_input_gets_problem_json(
    client: TestClient, body: bytes, ctype: str, status: int
) -> None:
    response = client.post("/auth/login", content=body, headers={"Content-Type": ctype})
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert {"type", "title", "status", "detail"} <= set(problem)
    assert "Traceback" not in response.text


@pytest.mark.req("E7")
def test_unknown_paths_and_methods_are_problems(client: TestClient) -> None:
    missing = client.get("/no/such/thing")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    wrong = client.get("/auth/login")
    assert wrong.status_code == 405
    assert wrong.headers["content-type"] == "application/problem+json"


@pytest.mark.req("L6", "A3")
def test_refused_tokens_on_api_routes_are_counted_by_reason(
    client: TestClient, services: Services
) -> None:
    def count(reason: str) -> float:
        value = services.metrics.registry.get_sample_value(
            "garrison_auth_failures_total", {"reason": reason}
        )
        return value or 0.0

    before = count("invalid_token")
    for _ in range(3):
        assert client.get("/auth/me", headers=bearer("eyJhbGciOiJub25lIn0.e30.")).status_code == 401
    assert count("invalid_token") == before + 3
