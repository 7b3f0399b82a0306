"""Users, refresh families and API keys behave the same on SQLite and PostgreSQL (A1, A5, A7, A12)."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from garrison.app import Services
from garrison.errors import AuthenticationError, ConflictError, RefreshReuseError, ValidationError
from garrison.identity.digest import token_hash
from garrison.identity.passwords import verify_password
from garrison.storage.schema import api_keys, refresh_tokens, users
from tests.conftest import PASSWORD


@pytest.mark.argon2_cost
@pytest.mark.req("A1")
def test_passwords_are_argon2id_hashes(backend_services: Services) -> None:
    user = backend_services.users.create("alice", PASSWORD)
    with backend_services.db.begin() as conn:
        stored = conn.execute(sa.select(users.c.password_hash)).scalar_one()
    assert stored.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert PASSWORD not in stored
    assert verify_password(user.password_hash, PASSWORD)
    assert not verify_password(user.password_hash, PASSWORD + "x")


@pytest.mark.req("A1")
def test_usernames_are_unique_case_insensitively(backend_services: Services) -> None:
    backend_services.users.create("Alice", PASSWORD)
    with pytest.raises(ConflictError):
        backend_services.users.create("alice", PASSWORD)


@pytest.mark.req("A1", "E7")
@pytest.mark.parametrize(
    "name", ["", " ", "a b", "x" * 151, "-lead", "robert'); DROP TABLE users;--"]
)
def test_bad_usernames_are_refused(backend_services: Services, name: str) -> None:
    with pytest.raises(ValidationError):
        backend_services.users.create(name, PASSWORD)


@pytest.mark.req("A1")
def test_short_passwords_are_refused(backend_services: Services) -> None:
    with pytest.raises(ValidationError, match="at least"):
        backend_services.users.create("bob", "short")


@pytest.mark.req("A5")
def test_refresh_tokens_are_stored_hashed_and_rotate(backend_services: Services) -> None:
    user = backend_services.users.create("alice", PASSWORD)
    first = backend_services.sessions.start(user.id, None)
    second = backend_services.sessions.rotate(first.refresh_token)
    assert second.family_id == first.family_id
    assert second.refresh_token != first.refresh_token
    with backend_services.db.begin() as conn:
        stored = set(conn.execute(sa.select(refresh_tokens.c.token_hash)).scalars())
    assert stored == {token_hash(first.refresh_token), token_hash(second.refresh_token)}


@pytest.mark.req("A5")
def test_reused_refresh_token_revokes_the_whole_family(backend_services: Services) -> None:
    user = backend_services.users.create("alice", PASSWORD)
    first = backend_services.sessions.start(user.id, None)
    second = backend_services.sessions.rotate(first.refresh_token)
    with pytest.raises(RefreshReuseError):
        backend_services.sessions.rotate(
            first.refresh_token
        )  # the thief, or the victim: either way
    with pytest.raises(AuthenticationError):
        backend_services.sessions.rotate(second.refresh_token)  # the newest token dies too
    assert backend_services.sessions.is_revoked(first.family_id)


@pytest.mark.req("A5")
def test_other_families_survive_a_reuse(backend_services: Services) -> None:
    user = backend_services.users.create("alice", PASSWORD)
    laptop = backend_services.sessions.start(user.id, None)
    phone = backend_services.sessions.start(user.id, None)
    backend_services.sessions.rotate(laptop.refresh_token)
    with pytest.raises(RefreshReuseError):
        backend_services.sessions.rotate(laptop.refresh_token)
    assert backend_services.sessions.rotate(phone.refresh_token).family_id == phone.family_id


@pytest.mark.req("A5")
@pytest.mark.parametrize(
    "token", ["", "grt_", "grt_unknown", "x" * 500, "eyJhbGciOiJub25lIn0.e30."]
)
def test_unknown_refresh_tokens_are_refused(backend_services: Services, token: str) -> None:
    with pytest.raises(AuthenticationError):
        backend_services.sessions.rotate(token)


@pytest.mark.req("A12")
def test_revoke_sessions_ends_every_family(backend_services: Services) -> None:
    user = backend_services.users.create("alice", PASSWORD)
    sessions = [backend_services.sessions.start(user.id, None) for _ in range(3)]
    assert backend_services.users.revoke_sessions(user.id) == 3
    for session in sessions:
        with pytest.raises(AuthenticationError):
            backend_services.sessions.rotate(session.refresh_token)


@pytest.mark.req("A4", "A12")
def test_disable_ends_sessions_and_marks_inactive(backend_services: Services) -> None:
    user = backend_services.users.create("alice", PASSWORD)
    session = backend_services.sessions.start(user.id, None)
    assert not backend_services.users.set_active(user.id, False).active
    with pytest.raises(AuthenticationError):
        backend_services.sessions.rotate(session.refresh_token)


@pytest.mark.req("A7")
def test_api_keys_are_prefixed_shown_once_and_hashed(backend_services: Services) -> None:
    user = backend_services.users.create("alice", PASSWORD)
    secret, key = backend_services.api_keys.create(user.id, ("tickets:read",), tenant=None)
    assert secret.startswith("gk_")
    with backend_services.db.begin() as conn:
        row = conn.execute(sa.select(api_keys)).one()
    assert secret not in str(row._mapping)
    assert secret.split("_", 2)[2] not in str(row._mapping)
    assert backend_services.api_keys.authenticate(secret).id == key.id
    assert key.scopes == ("tickets:read",)


@pytest.mark.req("A7")
def test_api_keys_expire(backend_services: Services) -> None:
    user = backend_services.users.create("alice", PASSWORD)
    now = [1_000_000.0]
    backend_services.api_keys.clock = lambda: now[0]
    secret, _ = backend_services.api_keys.create(user.id, ("x",), tenant=None, expires_in=60)
    assert backend_services.api_keys.authenticate(secret)
    now[0] += 61
    with pytest.raises(AuthenticationError):
        backend_services.api_keys.authenticate(secret)


@pytest.mark.req("A7", "A12")
def test_revoked_and_forged_api_keys_fail(backend_services: Services) -> None:
    user = backend_services.users.create("alice", PASSWORD)
    secret, key = backend_services.api_keys.create(user.id, ("x",), tenant=None)
    forged = secret[:-4] + ("AAAA" if not secret.endswith("AAAA") else "BBBB")
    with pytest.raises(AuthenticationError):
        backend_services.api_keys.authenticate(forged)
    backend_services.api_keys.revoke(key.id)
    with pytest.raises(AuthenticationError):
        backend_services.api_keys.authenticate(secret)


@pytest.mark.req("A7")
def test_api_key_needs_a_scope(backend_services: Services) -> None:
    user = backend_services.users.create("alice", PASSWORD)
    with pytest.raises(ValidationError):
        backend_services.api_keys.create(user.id, (), tenant=None)
