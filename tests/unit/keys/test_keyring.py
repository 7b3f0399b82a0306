"""The signing keyring on SQLite and PostgreSQL (A6, C5): rotation with overlap, emergency
rotation, private keys sealed at rest, replicas sharing one database, rotate-by dates."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives import serialization

from garrison.keys.keyring import DAY, Keyring
from garrison.keys.sealing import SealError
from garrison.storage.db import Database
from garrison.storage.schema import signing_keys
from garrison.tokens.jwt import TokenError
from tests.jose import SKEW, TTL, FakeClock, make_codec, make_keyring, open_db


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def db(backend_url: str) -> Iterator[Database]:
    database = open_db(backend_url)
    yield database
    database.dispose()


def _rows(db: Database) -> list[sa.Row[Any]]:
    with db.begin() as conn:
        return list(conn.execute(sa.select(signing_keys).order_by(signing_keys.c.created_at)))


def _live(db: Database) -> list[str]:
    return [r.kid for r in _rows(db) if r.retired_at is None and r.revoked_at is None]


@pytest.mark.req("A6")
def test_first_load_creates_one_key_and_publishes_it(db: Database, clock: FakeClock) -> None:
    keyring = make_keyring(db, clock, "ES256")
    jwks = keyring.jwks()["keys"]
    assert [k["kid"] for k in jwks] == [keyring.current.kid] == _live(db)
    assert jwks[0]["alg"] == "ES256"
    assert jwks[0]["use"] == "sig"
    assert jwks[0]["kty"] == "EC"
    keyring.load()
    assert len(_rows(db)) == 1  # a reload never makes another key


@pytest.mark.req("A6")
def test_rotation_overlap_publishes_current_and_previous(db: Database, clock: FakeClock) -> None:
    keyring = make_keyring(db, clock, "RS256")
    codec = make_codec(keyring, clock, cache_size=0)
    old_kid = keyring.current.kid
    old_token, body = codec.issue({"sub": "u1"})
    clock.advance(10)
    new_kid = keyring.rotate()
    assert keyring.current.kid == new_kid != old_kid
    jwks = keyring.jwks()["keys"]
    assert [k["kid"] for k in jwks] == [new_kid, old_kid]  # newest first
    assert all(k["alg"] == "RS256" and k["use"] == "sig" for k in jwks)
    new_token, _ = codec.issue({"sub": "u1"})
    assert _header_kid(new_token) == new_kid
    assert codec.verify(old_token)
    assert codec.verify(new_token)
    statuses = {k.kid: k.status for k in keyring.list()}
    assert statuses == {old_kid: "retired", new_kid: "active"}
    # the old token lives to its expiry (plus skew), not a second longer
    clock.now = body["exp"] + SKEW - 1
    assert codec.verify(old_token)
    clock.now = body["exp"] + SKEW
    with pytest.raises(TokenError, match="expired"):
        codec.verify(old_token)
    # past the verify window a reload drops the retired key from JWKS and from verification
    clock.now = 10 + body["iat"] + TTL + SKEW + 1
    keyring.load()
    assert [k["kid"] for k in keyring.jwks()["keys"]] == [new_kid]
    assert {k.kid: k.status for k in keyring.list()}[old_kid] == "expired"


@pytest.mark.req("A6")
def test_emergency_rotation_kills_old_tokens_and_drops_the_key(
    db: Database, clock: FakeClock
) -> None:
    keyring = make_keyring(db, clock, "EdDSA")
    codec = make_codec(keyring, clock)  # with its cache: a cached token must die too
    first = keyring.current.kid
    token, _ = codec.issue({"sub": "u1"})
    keyring.rotate()  # a normal rotation first: now there is a retired key as well
    retired_token = token
    assert codec.verify(retired_token)
    newest = keyring.current.kid
    live_token, _ = codec.issue({"sub": "u1"})
    assert codec.verify(live_token)
    replacement = keyring.rotate(emergency=True)
    for dead in (retired_token, live_token):
        with pytest.raises(TokenError):
            codec.verify(dead)
    assert [k["kid"] for k in keyring.jwks()["keys"]] == [replacement]
    statuses = {k.kid: k.status for k in keyring.list()}
    assert statuses == {first: "revoked", newest: "revoked", replacement: "active"}
    assert codec.verify(codec.issue({"sub": "u1"})[0])


@pytest.mark.req("A6")
def test_emergency_rotation_reaches_a_second_replica(db: Database, clock: FakeClock) -> None:
    """Replica B revokes; replica A (no message received) stops accepting within its refresh
    interval, and at once on an explicit reload (what the ``keys`` bus message triggers)."""
    a, b = make_keyring(db, clock, "ES256"), make_keyring(Database(db.url), clock, "ES256")
    codec_a = make_codec(a, clock)
    token, _ = codec_a.issue({"sub": "u1"})
    assert codec_a.verify(token)
    b.rotate(emergency=True)
    a.load()
    with pytest.raises(TokenError):
        codec_a.verify(token)
    assert a.current.kid == b.current.kid
    b.db.dispose()


@pytest.mark.req("A6", "C1")
def test_private_keys_are_sealed_at_rest(db: Database, clock: FakeClock) -> None:
    keyring = make_keyring(db, clock, "RS256")
    keyring.rotate(alg="ES256")
    keyring.rotate(alg="EdDSA")
    for row in _rows(db):
        raw = bytes(row.private_key)
        with pytest.raises(ValueError, match="Could not deserialize"):
            serialization.load_der_private_key(raw, password=None)
        with pytest.raises(ValueError, match="Could not deserialize"):
            serialization.load_der_private_key(raw[12:], password=None)  # minus the nonce
        assert b"-----BEGIN" not in raw
        assert b"\x30\x82" not in raw[:16]
        assert "d" not in row.public_jwk
        assert "p" not in row.public_jwk


@pytest.mark.req("A6", "C1")
def test_wrong_keyring_key_fails_with_a_clear_error(db: Database, clock: FakeClock) -> None:
    make_keyring(db, clock, "EdDSA")
    other = Keyring(db, bytes(32), alg="EdDSA", clock=clock)
    with pytest.raises(SealError, match="GARRISON_KEYRING_KEY") as caught:
        other.load()
    assert caught.value.code == "unseal_failed"
    assert len(_rows(db)) == 1  # it did not "fix" things by making a key of its own


@pytest.mark.req("A6")
def test_sealed_key_is_bound_to_its_kid(db: Database, clock: FakeClock) -> None:
    """A database writer cannot swap one key's sealed blob under another kid (AES-GCM AAD)."""
    keyring = make_keyring(db, clock, "EdDSA")
    first = keyring.current.kid
    second = keyring.rotate()
    rows = {r.kid: r for r in _rows(db)}
    with db.begin() as conn:
        conn.execute(
            sa.update(signing_keys)
            .where(signing_keys.c.kid == second)
            .values(private_key=rows[first].private_key)
        )
    with pytest.raises(SealError):
        make_keyring(db, clock, "EdDSA")


@pytest.mark.req("A6")
def test_replicas_starting_together_create_one_first_key(db: Database, clock: FakeClock) -> None:
    replicas = [Keyring(Database(db.url), bytes(range(32)), alg="ES256", clock=clock) for _ in "ab"]
    replicas += [Keyring(Database(db.url), bytes(range(32)), alg="ES256", clock=clock)]
    start = threading.Barrier(len(replicas))
    errors: list[BaseException] = []

    def boot(keyring: Keyring) -> None:
        try:
            start.wait(timeout=10)
            keyring.load()
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=boot, args=(k,)) for k in replicas]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    assert len(_rows(db)) == 1
    assert {k.current.kid for k in replicas} == set(_live(db))
    for k in replicas:
        k.db.dispose()


@pytest.mark.req("A6")
def test_concurrent_rotations_leave_one_active_key(db: Database, clock: FakeClock) -> None:
    first = make_keyring(db, clock, "EdDSA")
    replicas = [
        Keyring(Database(db.url), bytes(range(32)), alg="EdDSA", clock=clock) for _ in "abc"
    ]
    for k in replicas:
        k.load()
    start = threading.Barrier(len(replicas))
    errors: list[BaseException] = []

    def rotate(keyring: Keyring) -> None:
        try:
            start.wait(timeout=10)
            keyring.rotate()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=rotate, args=(k,)) for k in replicas]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    assert len(_rows(db)) == 4
    assert len(_live(db)) == 1
    first.load()
    assert first.current.kid == _live(db)[0]
    for k in replicas:
        k.db.dispose()


@pytest.mark.req("C5")
def test_rotate_by_date_and_overdue_flag(db: Database, clock: FakeClock) -> None:
    keyring = make_keyring(db, clock, "EdDSA", rotate_days=90)
    (info,) = keyring.list()
    assert info.created_at == clock()
    assert info.rotate_by == clock() + 90 * DAY
    assert not info.overdue
    clock.advance(90 * DAY - 1)
    assert not keyring.list()[0].overdue
    clock.advance(2)
    assert keyring.list()[0].overdue
    keyring.rotate()
    old, new = keyring.list()
    assert old.status == "retired"
    assert not old.overdue
    assert new.status == "active"
    assert not new.overdue
    assert new.rotate_by == clock() + 90 * DAY


@pytest.mark.req("A6")
def test_refresh_keeps_the_loaded_keys_when_the_database_is_down(
    db: Database, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    keyring = make_keyring(db, clock, "EdDSA")
    codec = make_codec(keyring, clock, cache_size=0)
    token, _ = codec.issue({"sub": "u1"})

    def down() -> list[Any]:
        raise sa.exc.OperationalError("SELECT", {}, Exception("connection refused"))

    monkeypatch.setattr(keyring, "_rows", down)
    clock.advance(keyring.refresh_interval + 1)
    assert codec.verify(token)["sub"] == "u1"


def _header_kid(token: str) -> str:
    import base64
    import json

    head = token.split(".", maxsplit=1)[0]
    kid: str = json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))["kid"]
    return kid


@pytest.mark.req("A2", "A6")
@pytest.mark.asvs("11.2.2", "11.2.3", "11.6.1")
def test_the_default_key_is_ps256_on_rsa_3072(db: Database, clock: FakeClock) -> None:
    keyring = Keyring(db, bytes(range(32)), clock=clock)
    keyring.load()
    jwk = keyring.jwks()["keys"][0]
    assert (keyring.current.alg, jwk["alg"], jwk["kty"]) == ("PS256", "PS256", "RSA")
    modulus = jwk["n"] + "=" * (-len(jwk["n"]) % 4)
    assert len(base64.urlsafe_b64decode(modulus)) * 8 == 3072  # 128-bit security, not 112


@pytest.mark.req("A2", "A6")
@pytest.mark.asvs("11.2.2", "11.6.1")
@pytest.mark.parametrize("new_alg", ["PS256", "ES256"])
def test_a_legacy_rs256_deployment_moves_to_an_approved_alg_at_rotation(
    db: Database, clock: FakeClock, new_alg: str
) -> None:
    """GARRISON_SIGNING_ALG changed from RS256: a restart keeps signing with the live RS256 key (no
    token breaks), the next `garrison keys rotate` makes a key of the configured algorithm, and
    the RS256 tokens verify until they expire, not after."""
    legacy = make_keyring(db, clock, "RS256")
    old_token, body = make_codec(legacy, clock, cache_size=0).issue({"sub": "u1"})
    restarted = make_keyring(db, clock, new_alg)  # the same database, the new setting
    assert restarted.current.alg == "RS256"
    clock.advance(10)
    restarted.rotate()
    assert restarted.current.alg == new_alg
    codec = make_codec(restarted, clock, cache_size=0)
    new_token, _ = codec.issue({"sub": "u1"})
    assert json.loads(base64.urlsafe_b64decode(new_token.split(".")[0] + "==="))["alg"] == new_alg
    assert [k["alg"] for k in restarted.jwks()["keys"]] == [new_alg, "RS256"]
    assert codec.verify(old_token)["sub"] == "u1"
    assert codec.verify(new_token)["sub"] == "u1"
    clock.now = body["exp"] + SKEW
    with pytest.raises(TokenError, match="expired"):
        codec.verify(old_token)
    clock.now = 10 + body["iat"] + TTL + SKEW + 1
    restarted.load()
    assert [k["alg"] for k in restarted.jwks()["keys"]] == [new_alg]
