"""Control characters in stored text (E7), over HTTP, on SQLite and on the real PostgreSQL.

A NUL reached PostgreSQL in emails, API key names and external IdP claims (a 500: PostgreSQL
refuses NUL in ``text``); CR, LF, DEL, C1 controls and U+2028/U+2029 were stored as they came
(forged lines wherever the value is printed). Every field is now refused with a problem+json
naming it (``garrison.text``), and an external IdP token carrying one is a plain 401.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from starlette.testclient import TestClient

from garrison.app import Services, build_services
from garrison.gateway.asgi import create_app
from garrison.storage.schema import users
from tests.conftest import PASSWORD, MakeSettings, bearer, login
from tests.jose import jws, segment

SECRET = "super-secret-jwt-token-with-at-least-32-characters-long"
GOTRUE_ISS = "https://project.supabase.co/auth/v1"
#: one of each refused kind: NUL, LF, CR, ESC, DEL, a C1 control (NEL), U+2028, U+2029
BAD = ["\x00", "\n", "\r", "\x1b", "\x7f", "\x85", "\u2028", "\u2029"]


@pytest.fixture
def env(
    make_settings: MakeSettings, backend_database: str
) -> Iterator[tuple[TestClient, Services]]:
    svc = build_services(
        make_settings(
            DATABASE_URL=backend_database,
            SUPABASE_JWT_SECRET=SECRET,
            SUPABASE_URL="https://project.supabase.co",
        ),
        migrate_schema=False,  # migrated already (the session's template)
    )
    svc.keyring.load()
    svc.users.create("root", PASSWORD, roles=("admin",))
    svc.users.create("alice", PASSWORD)
    app = create_app(svc)
    with TestClient(app, base_url="http://127.0.0.1", raise_server_exceptions=False) as client:
        yield client, svc
    svc.close()


def _admin(client: TestClient) -> dict[str, str]:
    return bearer(login(client, "root")["access_token"])


def _refused(response: Any, field: str, *, statuses: tuple[int, ...] = (400, 422)) -> None:
    assert response.status_code in statuses, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert field in body["detail"] + " ".join(body.get("reasons", [])), body


@pytest.mark.req("E7")
@pytest.mark.parametrize("bad", BAD)
def test_user_fields_refuse_control_characters(env: tuple[TestClient, Services], bad: str) -> None:
    client, svc = env
    admin = _admin(client)
    base = {"username": "bob", "password": PASSWORD}
    for field, body in [
        ("username", {**base, "username": f"bo{bad}b"}),
        ("email", {**base, "email": f"bob{bad}@example.test"}),
        ("email", {**base, "email": f"bob@example.test{bad}"}),
        ("tenant", {**base, "tenant": f"acme{bad}"}),
    ]:
        _refused(client.post("/admin/users", json=body, headers=admin), field)
    with svc.db.begin() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(users)).scalar() == 2


@pytest.mark.req("E7")
@pytest.mark.parametrize("bad", BAD)
def test_api_key_name_and_scopes_refuse_control_characters(
    env: tuple[TestClient, Services], bad: str
) -> None:
    client, _ = env
    admin = _admin(client)
    base = {"user": "alice", "scopes": ["tickets:read"]}
    for field, body in [
        ("name", {**base, "name": f"ci{bad}deploy"}),
        ("scope", {**base, "scopes": [f"tickets:read{bad}"]}),
    ]:
        _refused(client.post("/admin/api-keys", json=body, headers=admin), field)
    ok = client.post("/admin/api-keys", json={**base, "name": "ci\tdeploy key"}, headers=admin)
    assert ok.status_code in (200, 201), ok.text  # a tab in a label is fine


@pytest.mark.req("E7")
@pytest.mark.parametrize("bad", BAD)
def test_roles_and_delete_reason_refuse_control_characters(
    env: tuple[TestClient, Services], bad: str
) -> None:
    client, svc = env
    admin = _admin(client)
    alice = svc.users.find("alice")
    assert alice is not None
    patched = client.patch(
        f"/admin/users/{alice.id}", json={"roles": [f"user{bad}"]}, headers=admin
    )
    _refused(patched, "role")
    deleted = client.request(
        "DELETE", f"/admin/users/{alice.id}", json={"reason": f"gdpr{bad}request"}, headers=admin
    )
    _refused(deleted, "reason")
    assert svc.users.get(alice.id).roles == ("user",)


@pytest.mark.req("E7")
@pytest.mark.parametrize("bad", BAD)
def test_vault_names_and_audit_filters_refuse_control_characters(
    env: tuple[TestClient, Services], bad: str
) -> None:
    client, _ = env
    admin = _admin(client)
    name = f"db{bad}password"
    put = client.put(f"/v1/secrets/{_quote(name)}", json={"value": "s3cret"}, headers=admin)
    _refused(put, "name")
    for param in ("actor", "action", "tenant"):
        answer = client.get("/admin/audit", params={param: f"root{bad}"}, headers=admin)
        _refused(answer, param)


def _quote(text: str) -> str:
    from urllib.parse import quote

    return quote(text, safe="")


def _gotrue(**overrides: Any) -> str:
    now = int(time.time())
    claims = {
        "iss": GOTRUE_ISS,
        "aud": "authenticated",
        "sub": "8b0c-user",
        "email": "sam@example.test",
        "role": "authenticated",
        "iat": now,
        "exp": now + 3600,
        **overrides,
    }
    head = {"alg": "HS256", "typ": "JWT"}
    data = f"{segment(head)}.{segment(claims)}".encode()
    return jws(head, claims, signature=hmac.new(SECRET.encode(), data, hashlib.sha256).digest())


@pytest.mark.req("E7", "A10")
@pytest.mark.parametrize("bad", BAD)
@pytest.mark.parametrize("claim", ["sub", "email", "preferred_username", "role"])
def test_external_idp_token_with_a_control_character_is_a_401(
    env: tuple[TestClient, Services], bad: str, claim: str
) -> None:
    """A GoTrue token with a NUL in ``sub`` or ``email`` answered 500 on PostgreSQL (the claim
    reached the user row); a control character anywhere in its claims is now an invalid token."""
    client, svc = env
    value = {
        "sub": f"8b0c{bad}user",
        "email": f"sam{bad}@example.test",
        "preferred_username": f"sam{bad}",
        "role": f"authenticated{bad}",
    }[claim]
    token = _gotrue(**{claim: value})
    for answer in (
        client.get("/auth/me", headers=bearer(token)),
        client.get(
            "/verify",
            headers={**bearer(token), "X-Original-Method": "GET", "X-Original-URI": "/x"},
        ),
    ):
        _refused(answer, claim, statuses=(401,))
        assert answer.headers["www-authenticate"].startswith("Bearer")
    with svc.db.begin() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(users)).scalar() == 2
    good = client.get("/auth/me", headers=bearer(_gotrue()))
    assert good.status_code == 200, good.text
