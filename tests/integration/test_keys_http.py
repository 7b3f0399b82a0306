"""Signing keys and credential transport over HTTP and the CLI (A6, A7, A8, C5, Z5)."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from starlette.testclient import TestClient

from garrison.app import Services, build_services
from garrison.gateway.asgi import create_app
from garrison.identity.users import User
from garrison.keys.algorithms import ALGORITHMS
from garrison.storage.schema import audit_log
from tests.conftest import PASSWORD, MakeSettings, bearer, login
from tests.support import base_env, run_cli

ROTATE = "/admin/keys/rotate"


@pytest.fixture
def admin_token(client: TestClient, make_user: Callable[..., User]) -> str:
    make_user("root", roles=("admin",))
    token: str = login(client, "root")["access_token"]
    return token


@pytest.fixture
def user_token(client: TestClient, make_user: Callable[..., User]) -> str:
    make_user("bob", roles=("user",))
    token: str = login(client, "bob")["access_token"]
    return token


def _me(client: TestClient, token: str) -> int:
    return client.get("/auth/me", headers=bearer(token)).status_code


def _audit_actions(services: Services) -> list[str]:
    with services.db.begin() as conn:
        return list(conn.execute(sa.select(audit_log.c.action)).scalars())


# -- POST /admin/keys/rotate -----------------------------------------------------------------------
@pytest.mark.req("A6", "Z5")
def test_admin_rotates_with_overlap(
    client: TestClient, services: Services, admin_token: str, user_token: str
) -> None:
    old_kid = services.keyring.current.kid
    response = client.post(ROTATE, json={}, headers=bearer(admin_token))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["emergency"] is False
    assert body["kid"] != old_kid
    assert {k["kid"]: k["status"] for k in body["keys"]} == {
        old_kid: "retired",
        body["kid"]: "active",
    }
    assert _me(client, admin_token) == 200
    assert _me(client, user_token) == 200
    jwks = client.get("/.well-known/jwks.json").json()["keys"]
    assert [k["kid"] for k in jwks] == [body["kid"], old_kid]
    assert "admin.keys.rotate" in _audit_actions(services)


@pytest.mark.req("A6", "Z5")
def test_emergency_rotation_kills_a_live_token_at_once(
    client: TestClient, services: Services, admin_token: str, user_token: str
) -> None:
    assert _me(client, user_token) == 200  # verified and cached
    old_kid = services.keyring.current.kid
    response = client.post(ROTATE, json={"emergency": True}, headers=bearer(admin_token))
    assert response.status_code == 200, response.text
    assert response.json()["emergency"] is True
    for token in (user_token, admin_token):
        dead = client.get("/auth/me", headers=bearer(token))
        assert dead.status_code == 401
        assert dead.headers["www-authenticate"].startswith("Bearer")
    jwks = client.get("/.well-known/jwks.json").json()["keys"]
    assert old_kid not in [k["kid"] for k in jwks]
    assert len(jwks) == 1
    assert _me(client, login(client, "bob")["access_token"]) == 200


@pytest.mark.req("A6", "Z5")
def test_rotation_needs_an_admin(
    client: TestClient, services: Services, user_token: str, make_user: Callable[..., User]
) -> None:
    kid = services.keyring.current.kid
    assert client.post(ROTATE, json={}).status_code == 401
    denied = client.post(ROTATE, json={"emergency": True}, headers=bearer(user_token))
    assert denied.status_code == 403
    assert denied.json()["reasons"]
    assert denied.headers["x-auth-deny-reason"]
    make_user("tenant-admin", roles=("admin",), tenant="acme")
    tenant_admin = login(client, "tenant-admin")["access_token"]
    refused = client.post(ROTATE, json={"emergency": True}, headers=bearer(tenant_admin))
    assert refused.status_code == 403
    assert services.keyring.current.kid == kid


@pytest.mark.req("A6", "E7")
@pytest.mark.parametrize(
    "body", [{"emergency": "yes"}, {"emergency": 1}, {"emergency": "no"}, {"other": True}, []]
)
def test_rotation_body_is_strict(
    client: TestClient, services: Services, admin_token: str, body: Any
) -> None:
    kid = services.keyring.current.kid
    response = client.post(ROTATE, json=body, headers=bearer(admin_token))
    assert response.status_code in (400, 422)
    assert response.headers["content-type"].startswith("application/problem+json")
    assert services.keyring.current.kid == kid


@pytest.fixture
def strict_services(make_settings: MakeSettings) -> Iterator[Services]:
    svc = build_services(make_settings(REQUIRE_JWT_FOR_ADMIN="true"))
    svc.keyring.load()
    yield svc
    svc.close()


@pytest.mark.req("A6", "A7", "Z5")
def test_api_key_cannot_rotate_when_jwt_is_required(strict_services: Services) -> None:
    admin = strict_services.users.create("root", PASSWORD, roles=("admin",))
    secret, _ = strict_services.api_keys.create(admin.id, ("admin",), tenant=None)
    kid = strict_services.keyring.current.kid
    with TestClient(create_app(strict_services), base_url="http://127.0.0.1") as client:
        assert client.get("/auth/me", headers=bearer(secret)).status_code == 200  # key is valid
        response = client.post(ROTATE, json={"emergency": True}, headers=bearer(secret))
        assert response.status_code == 403
        assert "admin requires a JWT" in response.json()["reasons"]
        token = login(client, "root")["access_token"]
        assert client.post(ROTATE, json={}, headers=bearer(token)).status_code == 200
    assert strict_services.keyring.current.kid != kid


# -- discovery -------------------------------------------------------------------------------------
@pytest.mark.req("A6")
def test_jwks_document(client: TestClient, services: Services) -> None:
    response = client.get("/.well-known/jwks.json")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    (key,) = response.json()["keys"]
    assert key["kid"] == services.keyring.current.kid
    assert key["alg"] in ALGORITHMS
    assert key["use"] == "sig"
    assert not {"d", "p", "q", "dp", "dq", "qi"} & set(key)


@pytest.mark.req("A2", "A6")
def test_openid_configuration(client: TestClient, services: Services) -> None:
    doc = client.get("/.well-known/openid-configuration").json()
    issuer = services.settings.issuer
    assert doc["issuer"] == issuer
    assert doc["jwks_uri"] == issuer.rstrip("/") + "/.well-known/jwks.json"
    assert doc["token_endpoint"] == issuer.rstrip("/") + "/auth/login"
    assert set(doc["id_token_signing_alg_values_supported"]) == set(ALGORITHMS)
    token = login_any(client, services)
    assert _claims(token)["iss"] == doc["issuer"]


def login_any(client: TestClient, services: Services) -> str:
    services.users.create("carol", PASSWORD)
    token: str = login(client, "carol")["access_token"]
    return token


def _claims(token: str) -> dict[str, Any]:
    import base64

    body = token.split(".")[1]
    claims: dict[str, Any] = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    return claims


# -- the CLI ---------------------------------------------------------------------------------------
def _cli(data_dir: Path, *args: str) -> Any:
    return run_cli("--data-dir", str(data_dir), *args, env=base_env(data_dir))


@pytest.mark.req("A6", "C5")
def test_cli_list_and_rotate(tmp_path: Path) -> None:
    data = tmp_path / "cli"
    listed = _cli(data, "keys", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    (first,) = json.loads(listed.stdout)
    assert first["status"] == "active"
    assert first["overdue"] is False
    assert first["rotate_by"] - first["created_at"] == pytest.approx(90 * 86400)
    rotated = _cli(data, "keys", "rotate", "--json")
    assert rotated.returncode == 0, rotated.stderr
    new_kid = json.loads(rotated.stdout)["kid"]
    emergency = _cli(data, "keys", "rotate", "--emergency", "--json")
    assert emergency.returncode == 0, emergency.stderr
    assert json.loads(emergency.stdout)["emergency"] is True
    statuses = {
        k["kid"]: k["status"] for k in json.loads(_cli(data, "keys", "list", "--json").stdout)
    }
    assert statuses[first["kid"]] == "revoked"
    assert statuses[new_kid] == "revoked"
    assert sorted(statuses.values()) == ["active", "revoked", "revoked"]
    human = _cli(data, "keys", "list")
    assert human.returncode == 0
    assert "active" in human.stdout


@pytest.mark.req("A6")
@pytest.mark.parametrize(
    "args", [("keys", "rotate", "--bogus"), ("keys", "list", "extra"), ("keys", "nope")]
)
def test_cli_bad_usage_exits_2(tmp_path: Path, args: tuple[str, ...]) -> None:
    result = _cli(tmp_path / "cli", *args)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr


@pytest.mark.req("A6", "C1")
def test_cli_wrong_keyring_key_is_a_clear_error(tmp_path: Path) -> None:
    data = tmp_path / "cli"
    assert _cli(data, "keys", "list").returncode == 0
    env = base_env(data, GARRISON_KEYRING_KEY="x" * 43)
    result = run_cli("--data-dir", str(data), "keys", "list", env=env)
    assert result.returncode == 1
    assert "GARRISON_KEYRING_KEY" in result.stderr + result.stdout
    assert "Traceback" not in result.stderr


@pytest.mark.req("A6")
def test_cli_emergency_rotation_reaches_a_running_service(
    client: TestClient, services: Services, user_token: str
) -> None:
    """The CLI is another process and, without Redis, no message reaches the service: its keyring
    re-reads the key rows within ``refresh_interval`` and the revoked key's tokens die."""
    data = services.settings.data_dir
    assert _me(client, user_token) == 200
    result = _cli(data, "keys", "rotate", "--emergency", "--json")
    assert result.returncode == 0, result.stderr
    deadline = time.monotonic() + services.keyring.refresh_interval + 5
    while _me(client, user_token) == 200 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _me(client, user_token) == 401


# -- A8: where credentials may travel -------------------------------------------------------------
@pytest.mark.req("A8")
@pytest.mark.parametrize("name", ["access_token", "token", "jwt", "api_key", "ACCESS_TOKEN"])
def test_token_in_query_string_is_refused_and_not_logged(
    client: TestClient, user_token: str, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    response = client.get(f"/auth/me?{name}={user_token}")
    assert response.status_code in (400, 401)
    assert response.headers["content-type"].startswith("application/problem+json")
    assert user_token not in response.text
    server_side = [r.getMessage() for r in caplog.records if not r.name.startswith("httpx")]
    assert not [line for line in server_side if user_token in line]  # the test client's own log
    # not even alongside a valid header
    both = client.get(f"/auth/me?x=1&{name}={user_token}", headers=bearer(user_token))
    assert both.status_code in (400, 401)


@pytest.mark.req("A8")
def test_basic_auth_is_not_a_credential(client: TestClient, make_user: Callable[..., User]) -> None:
    import base64

    make_user("dave")
    basic = base64.b64encode(f"dave:{PASSWORD}".encode()).decode()
    response = client.get("/auth/me", headers={"Authorization": f"Basic {basic}"})
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.req("A8")
@pytest.mark.parametrize(
    "header",
    ["Bearer {t} {t}", "Bearer {t},{t}", "Bearer", "Bearer ", "{t}", "Token {t}", "Bearer\t{t}x"],
)
def test_malformed_bearer_headers_are_refused(
    client: TestClient, user_token: str, header: str
) -> None:
    response = client.get("/auth/me", headers={"Authorization": header.format(t=user_token)})
    assert response.status_code == 401


@pytest.mark.req("A8")
@pytest.mark.parametrize("scheme", ["bearer", "BEARER", "Bearer"])
def test_bearer_scheme_is_case_insensitive(
    client: TestClient, user_token: str, scheme: str
) -> None:
    """RFC 9110 section 11.1: the auth scheme is case-insensitive."""
    headers = {"Authorization": f"{scheme} {user_token}"}
    assert client.get("/auth/me", headers=headers).status_code == 200


@pytest.mark.req("A8")
@pytest.mark.parametrize(
    "cookie", ["access_token", "token", "session", "garrison_session", "Authorization"]
)
def test_token_in_a_cookie_is_not_accepted(
    client: TestClient, user_token: str, cookie: str
) -> None:
    client.cookies.set(cookie, user_token)
    try:
        assert client.get("/auth/me").status_code == 401
        assert client.post(ROTATE, json={"emergency": True}).status_code == 401
    finally:
        client.cookies.clear()
