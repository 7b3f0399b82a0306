"""The password lifecycle over HTTP and the CLI (A15): change with the current password (other
sessions end, this one lives), the policy wherever a password is set (length, common and breached
passwords, context words, no composition rules), administrator-set passwords changed first, and
argon2 parameters upgraded at login."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from argon2 import PasswordHasher, Type
from starlette.testclient import TestClient

from garrison.app import Services, build_services
from garrison.config import load_settings
from garrison.errors import ConfigError
from garrison.gateway.asgi import create_app
from garrison.identity.password_policy import common_passwords
from garrison.identity.passwords import HASHER
from garrison.identity.users import User
from garrison.storage.schema import users
from tests.conftest import PASSWORD, MakeSettings, bearer, login
from tests.support import base_env, run_cli
from tests.unit.identity.browser import audit_rows

MakeUser = Callable[..., User]
NEW = "a brand new passphrase of mine"


def _change(client: TestClient, token: str, current: str = PASSWORD, new: str = NEW) -> Any:
    return client.post(
        "/auth/password",
        json={"current_password": current, "new_password": new},
        headers=bearer(token),
    )


def _refresh(client: TestClient, refresh_token: str) -> int:
    return client.post("/auth/refresh", json={"refresh_token": refresh_token}).status_code


def _admin(client: TestClient, make_user: MakeUser) -> dict[str, str]:
    make_user("root", roles=("admin",))
    return bearer(login(client, "root")["access_token"])


# -- changing one's own password ---------------------------------------------------------------


@pytest.mark.req("A15", "A16")
@pytest.mark.asvs("V6.2.2", "V6.2.3", "V7.4.3")
def test_a_password_change_ends_the_other_sessions_and_keeps_this_one(
    client: TestClient, make_user: MakeUser, services: Services
) -> None:
    make_user("alice")
    here, there = login(client, "alice"), login(client, "alice")
    assert client.get("/auth/me", headers=bearer(there["access_token"])).status_code == 200

    assert _change(client, here["access_token"]).status_code == 204

    # the other session: its access token and its refresh token are dead at once
    assert client.get("/auth/me", headers=bearer(there["access_token"])).status_code == 401
    assert _refresh(client, there["refresh_token"]) == 401
    # this one lives on: the same access token, and its refresh
    assert client.get("/auth/me", headers=bearer(here["access_token"])).status_code == 200
    assert _refresh(client, here["refresh_token"]) == 200
    # the old password is gone, the new one works
    old = client.post("/auth/login", json={"username": "alice", "password": PASSWORD})
    assert old.status_code == 401
    login(client, "alice", NEW)
    [row] = [r for r in audit_rows(services, "auth.password_change") if r.outcome == "success"]
    assert row.details["ended_sessions"] == 1


@pytest.mark.req("A15", "A13")
@pytest.mark.asvs("V6.2.3", "V6.3.1")
def test_a_stolen_session_can_neither_change_nor_guess_the_password(
    client: TestClient, make_user: MakeUser, services: Services
) -> None:
    make_user("alice")
    token = login(client, "alice")["access_token"]
    wrong = _change(client, token, current="not the password at all")
    assert wrong.status_code == 403
    assert wrong.json()["reasons"] == ["current password does not match"]
    login(client, "alice")  # unchanged
    # guessing the current password through this endpoint spends the login budget (5 per pair)
    answers = [_change(client, token, current=f"guess number {i}").status_code for i in range(6)]
    assert 429 in answers
    assert _change(client, token).status_code == 429  # even the right one, while locked
    failures = [r for r in audit_rows(services, "auth.password_change") if r.outcome != "success"]
    assert len(failures) >= 6


@pytest.mark.req("A15")
@pytest.mark.asvs("V6.2.1", "V6.2.5", "V6.2.9")
def test_the_password_length_rules(
    client: TestClient, make_user: MakeUser, services: Services
) -> None:
    make_user("alice")
    pair = login(client, "alice")
    short = _change(client, pair["access_token"], new="7 chars")
    assert short.status_code == 422
    assert "password: at least 8 characters" in short.json()["reasons"]
    # 100 characters of lower-case words only: long, no composition rules, accepted
    long = ("lower case words only and nothing else " * 3)[:100]
    assert len(long) == 100
    assert _change(client, pair["access_token"], new=long).status_code == 204
    login(client, "alice", long)
    # and 128, changed with the 100 as the current one
    longer = "x1 " * 42 + "yz"
    assert len(longer) == 128
    assert _change(client, pair["access_token"], current=long, new=longer).status_code == 204
    login(client, "alice", longer)


@pytest.mark.req("A15")
@pytest.mark.asvs("V6.2.4", "V6.2.12")
def test_a_common_or_breached_password_is_refused(client: TestClient, make_user: MakeUser) -> None:
    make_user("alice")
    token = login(client, "alice")["access_token"]
    for breached in ("qwertyuiop", "Password123", "iloveyou", "SUNSHINE"):
        assert breached.lower() in common_passwords()  # the shipped list has it
        refused = _change(client, token, new=breached)
        assert refused.status_code == 422, breached
        assert refused.json()["reasons"] == [
            "password: one of the most common (breached) passwords"
        ]
    assert len([w for w in common_passwords() if len(w) >= 8]) >= 3000
    login(client, "alice")  # nothing changed


@pytest.mark.req("A15")
@pytest.mark.asvs("V6.1.2", "V6.2.11")
def test_passwords_built_from_context_words_are_refused(
    client: TestClient, make_user: MakeUser
) -> None:
    make_user("alice", email="alice.smith@example.com")
    token = login(client, "alice")["access_token"]
    for word, password in (
        ("garrison", "MyGarrisonLogin#1"),
        ("alice", "it is alice's password"),
        ("alice.smith", "hello alice.smith 2026"),
    ):
        refused = _change(client, token, new=password)
        assert refused.status_code == 422
        assert f"password: built from the context word {word!r}" in refused.json()["reasons"]


@pytest.mark.req("A15")
@pytest.mark.asvs("V6.2.1")
def test_the_minimum_length_is_configurable_up_but_never_below_8(
    make_settings: MakeSettings,
) -> None:
    with pytest.raises(ConfigError) as refused:
        make_settings(GARRISON_PASSWORD_MIN_LENGTH="7")
    assert "GARRISON_PASSWORD_MIN_LENGTH" in str(refused.value)
    svc = build_services(make_settings(GARRISON_PASSWORD_MIN_LENGTH="16"))
    try:
        with TestClient(create_app(svc), base_url="http://127.0.0.1") as client:
            admin = _admin(client, lambda name, **k: svc.users.create(name, PASSWORD, **k))
            body = {"username": "bob", "password": "fifteen chars!!"}
            made = client.post("/admin/users", json=body, headers=admin)
            assert made.status_code == 422
            assert "password: at least 16 characters" in made.json()["reasons"]
    finally:
        svc.close()


@pytest.mark.req("A15")
@pytest.mark.asvs("V6.2.4", "V6.4.2")
def test_admin_created_users_get_the_same_rules_and_no_hints(
    client: TestClient, make_user: MakeUser
) -> None:
    admin = _admin(client, make_user)
    weak = client.post(
        "/admin/users", json={"username": "bob", "password": "baseball1"}, headers=admin
    )
    assert weak.status_code == 422
    assert weak.json()["reasons"] == ["password: one of the most common (breached) passwords"]
    hint = client.post(
        "/admin/users",
        json={"username": "bob", "password": "a fine long passphrase", "password_hint": "fine"},
        headers=admin,
    )
    assert hint.status_code == 422  # there is no such thing as a hint or a security question


# -- administrator-set passwords ---------------------------------------------------------------


@pytest.mark.req("A15", "Z3")
@pytest.mark.asvs("V6.4.1")
def test_an_admin_set_password_must_be_changed_before_anything_else(
    client: TestClient, make_user: MakeUser
) -> None:
    admin = _admin(client, make_user)
    made = client.post(
        "/admin/users",
        json={"username": "bob", "password": "set by the admin 1", "roles": ["admin"]},
        headers=admin,
    )
    assert made.status_code == 201, made.text
    pair = login(client, "bob", "set by the admin 1")  # 200, but the tokens do one thing only
    token = pair["access_token"]
    for method, path in (("GET", "/auth/me"), ("GET", "/admin/users"), ("GET", "/auth/sessions")):
        refused = client.request(method, path, headers=bearer(token))
        assert refused.status_code == 403, (path, refused.text)
        assert refused.json()["reasons"] == ["password change required"]
    # at the edge too: a proxied route any signed-in user may call
    edge = {"X-Forwarded-Method": "POST", "X-Forwarded-Uri": "/v1/decide", **bearer(token)}
    verdict = client.get("/verify", headers=edge)
    assert verdict.status_code == 403
    assert verdict.headers["X-Auth-Deny-Reason"] == "password change required"
    # the same password again is no change
    same = _change(client, token, current="set by the admin 1", new="set by the admin 1")
    assert same.status_code == 422
    assert (
        _change(client, token, current="set by the admin 1", new="his very own secret").status_code
        == 204
    )
    # the session's next tokens are unrestricted
    refreshed = client.post("/auth/refresh", json={"refresh_token": pair["refresh_token"]})
    fresh = bearer(refreshed.json()["access_token"])
    assert client.get("/auth/me", headers=fresh).status_code == 200
    assert client.get("/admin/users", headers=fresh).status_code == 200


@pytest.mark.req("A15", "A12")
@pytest.mark.asvs("V6.4.1", "V7.4.3")
def test_a_reset_hands_out_a_temporary_password_and_ends_every_session(
    client: TestClient, make_user: MakeUser, services: Services
) -> None:
    admin = _admin(client, make_user)
    bob = make_user("bob")
    before = login(client, "bob")
    reset = client.post(f"/admin/users/{bob.id}/reset-password", headers=admin)
    assert reset.status_code == 200, reset.text
    assert reset.headers["cache-control"] == "no-store"
    temporary = reset.json()["temporary_password"]
    assert len(temporary) >= 20
    # every session of bob's is over, tokens and refresh alike; the old password too
    assert client.get("/auth/me", headers=bearer(before["access_token"])).status_code == 401
    assert _refresh(client, before["refresh_token"]) == 401
    assert (
        client.post("/auth/login", json={"username": "bob", "password": PASSWORD}).status_code
        == 401
    )
    pair = login(client, "bob", temporary)
    assert client.get("/auth/me", headers=bearer(pair["access_token"])).status_code == 403
    assert (
        _change(client, pair["access_token"], temporary, "he picks one of his own").status_code
        == 204
    )
    [record] = audit_rows(services, "admin.user.reset_password")
    assert record.details["user_id"] == bob.id
    assert record.details["ended_sessions"] == 1
    assert temporary not in json.dumps(record.details)


@pytest.mark.slow
@pytest.mark.req("A15")
@pytest.mark.asvs("V6.4.1", "V6.2.4")
def test_the_cli_resets_and_applies_the_rules(tmp_path: Path) -> None:
    env = base_env(tmp_path / "data")
    weak = run_cli(
        "users", "create", "--username", "kim", "--password-stdin", env=env, stdin="password1\n"
    )
    assert weak.returncode == 1
    assert "one of the most common" in weak.stdout + weak.stderr
    made = run_cli(
        "users", "create", "--username", "kim", "--password-stdin", env=env, stdin=PASSWORD + "\n"
    )
    assert made.returncode == 0, made.stderr
    done = run_cli("users", "reset-password", "kim", "--json", env=env)
    assert done.returncode == 0, done.stderr
    temporary = json.loads(done.stdout)["temporary_password"]
    settings_env = {"GARRISON_DATA_DIR": str(tmp_path / "data"), "GARRISON_DOTENV": "/nonexistent"}
    svc = build_services(load_settings(settings_env))
    try:
        with TestClient(create_app(svc), base_url="http://127.0.0.1") as client:
            token = login(client, "kim", temporary)["access_token"]
            assert client.get("/auth/me", headers=bearer(token)).status_code == 403
        assert len(audit_rows(svc, "admin.user.reset_password")) == 1
        assert len(audit_rows(svc, "admin.user.create")) == 1
    finally:
        svc.close()


# -- argon2 parameters ---------------------------------------------------------------------------


@pytest.mark.argon2_cost
@pytest.mark.req("A15", "A1")
@pytest.mark.asvs("V11.4.2")
def test_a_login_upgrades_a_hash_made_with_older_parameters(
    client: TestClient, make_user: MakeUser, services: Services
) -> None:
    alice = make_user("alice")
    weaker = PasswordHasher(time_cost=1, memory_cost=8 * 1024, parallelism=1, type=Type.ID)
    old_hash = weaker.hash(PASSWORD)
    with services.db.begin() as conn:
        conn.execute(sa.update(users).where(users.c.id == alice.id).values(password_hash=old_hash))
    assert HASHER.check_needs_rehash(old_hash)

    login(client, "alice")

    with services.db.begin() as conn:
        stored = conn.execute(
            sa.select(users.c.password_hash).where(users.c.id == alice.id)
        ).scalar_one()
    assert stored != old_hash
    assert stored.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert not HASHER.check_needs_rehash(stored)
    login(client, "alice")  # the same password, under the new hash
