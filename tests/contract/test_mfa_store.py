"""The second factor's records on SQLite and on PostgreSQL (A14): one use per code, even in a race.

Two replicas checking the same TOTP code (or spending the same recovery code, or the same
``mfa_token``) at once must not both succeed: each check is one conditional UPDATE, so exactly one
of the racers wins. Threads stand in for the replicas; they share one database.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import pyotp
import pytest
import sqlalchemy as sa

from garrison.app import Services
from garrison.errors import GarrisonError
from garrison.identity.mfa import MfaStore
from garrison.identity.users import User
from garrison.privacy import erase_user, export_user
from garrison.storage.schema import mfa_challenges, mfa_recovery_codes, mfa_totp
from garrison.vault import KeySet
from garrison.vault.errors import DecryptError

RACERS = 8


def _enrolled(svc: Services, username: str = "alice") -> tuple[User, MfaStore, str, list[str]]:
    user = svc.users.create(username, "correct horse battery staple")
    store = svc.auth.mfa.store if svc.auth.mfa is not None else None
    assert store is not None
    enrolment = store.begin_enrolment(user.id)
    assert enrolment is not None
    step = pyotp.TOTP(enrolment.seed).timecode(store.clock()) - 1
    codes = store.confirm(user.id, step)
    assert codes is not None
    return user, store, enrolment.seed, codes


def _race(fn: object, *args: object) -> list[bool]:
    with ThreadPoolExecutor(RACERS) as pool:
        return list(pool.map(lambda _: fn(*args), range(RACERS)))  # type: ignore[operator]


@pytest.mark.req("A14")
@pytest.mark.asvs("V6.5.1")
def test_a_totp_code_raced_by_replicas_is_accepted_once(backend_services: Services) -> None:
    user, store, seed, _ = _enrolled(backend_services)
    code = pyotp.TOTP(seed).at(store.clock())
    assert _race(store.check_totp, user.id, code).count(True) == 1
    assert store.check_totp(user.id, code) is False


@pytest.mark.req("A14")
@pytest.mark.asvs("V6.5.1")
def test_a_recovery_code_raced_by_replicas_is_spent_once(backend_services: Services) -> None:
    user, store, _, codes = _enrolled(backend_services)
    assert _race(store.use_recovery_code, user.id, codes[0]).count(True) == 1
    assert store.recovery_codes_left(user.id) == 9


@pytest.mark.req("A14")
def test_an_mfa_token_raced_by_replicas_is_spent_once(backend_services: Services) -> None:
    user, store, _, _ = _enrolled(backend_services)
    token, ttl = store.open_challenge(user.id, ("pwd",), "token")
    assert ttl == 300
    challenge = store.challenge(token)
    assert challenge is not None
    assert challenge.user_id == user.id
    assert _race(store.spend_challenge, challenge).count(True) == 1
    assert store.challenge(token) is None


@pytest.mark.req("A14", "V2")
@pytest.mark.asvs("V6.5.2")
def test_a_seed_opens_only_in_its_own_row_and_under_the_vault_keys(
    backend_services: Services,
) -> None:
    alice, store, seed, _ = _enrolled(backend_services, "alice")
    bob, _, _, _ = _enrolled(backend_services, "bob")
    db = backend_services.db
    with db.begin() as conn:
        sealed = conn.execute(
            sa.select(mfa_totp.c.secret).where(mfa_totp.c.user_id == alice.id)
        ).scalar_one()
        # copy alice's sealed seed into bob's row: it must not open there
        conn.execute(sa.update(mfa_totp).where(mfa_totp.c.user_id == bob.id).values(secret=sealed))
    with pytest.raises(DecryptError):
        store.check_totp(bob.id, pyotp.TOTP(seed).at(store.clock()))
    # and a store holding another vault key cannot read alice's
    other = MfaStore(db, KeySet.from_secrets("another-vault-key-" + "x" * 40), store.clock)
    with pytest.raises(GarrisonError):
        other.check_totp(alice.id, pyotp.TOTP(seed).at(store.clock()))


@pytest.mark.req("A14", "V4")
def test_export_names_the_factor_and_erasure_removes_it(backend_services: Services) -> None:
    svc = backend_services
    svc.users.create("root", "correct horse battery staple", roles=("admin",))
    alice, store, seed, codes = _enrolled(svc)
    store.open_challenge(alice.id, ("pwd",), "token")
    assert store.use_recovery_code(alice.id, codes[0])
    doc = export_user(svc.db, alice.id, now=svc.clock())
    assert doc["mfa"]["recovery_codes_left"] == 9
    assert doc["mfa"]["totp"]["confirmed_at"] is not None
    text = json.dumps(doc, default=str)
    for secret in (seed, *codes):
        assert secret not in text
    erase_user(svc.db, svc.bus, alice.id)
    with svc.db.begin() as conn:
        for table in (mfa_totp, mfa_recovery_codes, mfa_challenges):
            assert conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one() == 0
