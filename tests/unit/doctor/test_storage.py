"""Storage checks on a real PostgreSQL: roles, row security, migrations, keys, passwords, audit
(O4, T4, O2, C5, A1, L7). The configured DATABASE_URL carries ``sslmode=require``; the local test
server has no TLS, so the storage checks connect through ``storage_url`` (the same database without
sslmode) while the configuration checks judge the configured string."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from garrison.app import audit_seal
from garrison.audit.event import AuditEvent
from garrison.audit.writer import AuditWriter
from garrison.doctor import DoctorContext, Status
from garrison.identity.passwords import HASHER
from garrison.identity.users import UserStore
from garrison.keys.keyring import DAY, Keyring
from garrison.keys.sealing import new_secret
from garrison.storage.bus import InvalidationBus
from garrison.storage.db import Database
from garrison.storage.schema import api_keys
from tests.support import free_port
from tests.unit.doctor.conftest import LoadSettings, RoleDatabase, production_env, run_ids

STORAGE_IDS = (
    "operations.database-reachable",
    "operations.migrations",
    "tenancy.runtime-role",
    "tenancy.row-level-security",
    "audit.persistent-log",
    "audit.chain",
)
T0 = 1_800_000_000.0


def context(
    load: LoadSettings, storage_url: str, audit_key: str | None = None, **kw: object
) -> DoctorContext:
    keyed = {"GARRISON_AUDIT_KEY": audit_key} if audit_key else {}
    settings = load(**production_env(storage_url + "?sslmode=require", **keyed))
    return DoctorContext(settings, storage_url=storage_url, **kw)  # type: ignore[arg-type]


@pytest.mark.req("O4", "T4", "O2", "L1", "L7", "C3")
def test_a_least_privilege_production_database_passes(
    load: LoadSettings, role_database: RoleDatabase
) -> None:
    ctx = context(load, role_database.app_url)
    results = run_ids(ctx, *STORAGE_IDS, "operations.database-url")
    assert {i: c.status for i, c in results.items()} == dict.fromkeys(
        (*STORAGE_IDS, "operations.database-url"), Status.PASS
    ), results


@pytest.mark.req("O4", "T4")
def test_a_superuser_runtime_login_fails(load: LoadSettings, role_database: RoleDatabase) -> None:
    check = run_ids(context(load, role_database.admin_url), "tenancy.runtime-role")
    found = check["tenancy.runtime-role"]
    assert found.status is Status.FAIL
    assert "superuser 'postgres'" in found.finding
    assert "garrison db roles" in found.fix


@pytest.mark.req("O4", "T4")
def test_row_security_switched_off_is_named(
    load: LoadSettings, role_database: RoleDatabase
) -> None:
    db = Database(role_database.admin_url)
    with db.engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE api_keys DISABLE ROW LEVEL SECURITY"))
        conn.execute(sa.text("DROP POLICY garrison_tenant_isolation ON vault_secrets"))
    db.dispose()
    check = run_ids(context(load, role_database.app_url), "tenancy.row-level-security")
    found = check["tenancy.row-level-security"]
    assert found.status is Status.FAIL
    assert found.finding == "api_keys: row security off; vault_secrets: row security on but no " \
        "policy (every row hidden)"  # fmt: skip


@pytest.mark.req("O4", "O2")
def test_pending_migrations_and_drift_fail(
    load: LoadSettings, role_database: RoleDatabase, tmp_path: Path
) -> None:
    empty = f"sqlite:///{tmp_path / 'empty.db'}"
    Database(empty).ping()  # an existing database file, never migrated
    pending = run_ids(context(load, empty), "operations.migrations")["operations.migrations"]
    assert pending.status is Status.FAIL
    assert "pending migration 0001" in pending.finding
    assert "garrison db upgrade" in pending.fix

    db = Database(role_database.admin_url)
    with db.engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE users ADD COLUMN smuggled VARCHAR(10)"))
    db.dispose()
    drift = run_ids(context(load, role_database.admin_url), "operations.migrations")
    assert drift["operations.migrations"].status is Status.FAIL
    assert "schema drift" in drift["operations.migrations"].finding


@pytest.mark.req("O4", "L8")
def test_an_unreachable_database_is_one_fail_and_the_rest_skip(load: LoadSettings) -> None:
    dead = f"postgresql://postgres@127.0.0.1:{free_port()}/nothing"
    results = run_ids(context(load, dead), *STORAGE_IDS)
    assert results["operations.database-reachable"].status is Status.FAIL
    assert "database unavailable" in results["operations.database-reachable"].finding
    others = {c.status for i, c in results.items() if i != "operations.database-reachable"}
    assert others == {Status.SKIP}


@pytest.mark.req("O4", "C5", "A6")
def test_key_rotation_overdue_fails(load: LoadSettings, role_database: RoleDatabase) -> None:
    db = Database(role_database.admin_url)
    Keyring(db, bytes(32), rotate_days=90, clock=lambda: T0).load()
    db.dispose()

    def at(day: float) -> tuple[Status, str]:
        ctx = context(load, role_database.app_url, clock=lambda: T0 + day * DAY)
        found = run_ids(ctx, "tokens.key-rotation")["tokens.key-rotation"]
        return found.status, found.finding

    status, finding = at(10)
    assert status is Status.PASS
    assert "is 10 days old" in finding
    status, finding = at(91)
    assert status is Status.FAIL
    assert "is 91 days old, past its rotate-by date" in finding


@pytest.mark.req("O4", "A1", "C2")
def test_an_admin_with_a_default_password_fails(
    load: LoadSettings, role_database: RoleDatabase
) -> None:
    db = Database(role_database.admin_url)
    store = UserStore(db, InvalidationBus())
    store.create("root", "a long and unguessable passphrase", roles=("admin",))
    ids = ("identity.admin-exists", "identity.default-passwords")
    clean = run_ids(context(load, role_database.app_url), *ids)
    assert {c.status for c in clean.values()} == {Status.PASS}

    # the password policy refuses default passwords now: plant them by hand, as an old
    # deployment (or a direct database edit) would have them
    weak = store.create("ops", "placeholder passphrase one", roles=("admin",))
    bob = store.create("bob", "placeholder passphrase two")  # not an admin: not tried
    legacy = store.create("legacy", "placeholder passphrase three", roles=("admin",))
    with db.engine.begin() as conn:
        for user, planted in ((weak, "changeme"), (bob, "changeme"), (legacy, "admin")):
            conn.execute(
                sa.text("UPDATE users SET password_hash = :h WHERE id = :id"),
                {"h": HASHER.hash(planted), "id": user.id},
            )
    db.dispose()
    found = run_ids(context(load, role_database.app_url), *ids)["identity.default-passwords"]
    assert found.status is Status.FAIL
    assert found.finding == f"admin account(s) with a default password: legacy, {weak.username}"
    assert "garrison users disable legacy" in found.fix


@pytest.mark.req("O4", "L7")
def test_a_tampered_audit_chain_fails(load: LoadSettings, role_database: RoleDatabase) -> None:
    key = new_secret()
    db = Database(role_database.admin_url)
    writer = AuditWriter(db, audit_seal(load(GARRISON_AUDIT_KEY=key)))
    for n in range(3):
        writer.record_sync(AuditEvent(action=f"test.{n}", outcome="success", actor="doctor"))
    ok = run_ids(context(load, role_database.app_url, key), "audit.chain")["audit.chain"]
    assert ok.status is Status.PASS
    assert ok.finding.startswith("3 record(s) verified")
    with db.engine.begin() as conn:
        conn.execute(sa.text("UPDATE audit_log SET actor = 'someone-else' WHERE seq = 2"))
    db.dispose()
    broken = run_ids(context(load, role_database.app_url, key), "audit.chain")["audit.chain"]
    assert broken.status is Status.FAIL
    assert broken.finding.startswith("broken at record 2")


@pytest.mark.req("O4", "A3")
def test_forged_tokens_name_a_real_admin_when_there_is_one(
    load: LoadSettings, role_database: RoleDatabase
) -> None:
    from garrison.doctor.tokens import _forged_claims

    db = Database(role_database.admin_url)
    admin = UserStore(db, InvalidationBus()).create(
        "boss", "a long and unguessable passphrase", roles=("admin",), tenant="acme"
    )
    db.dispose()
    claims = _forged_claims(context(load, role_database.app_url))
    assert (claims["sub"], claims["tenant"], claims["roles"]) == (admin.id, "acme", ["admin"])


@pytest.mark.req("O4", "C5", "A7")
def test_api_keys_that_never_expire_or_are_old_are_reported(
    load: LoadSettings, role_database: RoleDatabase
) -> None:
    from garrison.identity.apikeys import ApiKeyStore

    db = Database(role_database.admin_url)
    owner = UserStore(db, InvalidationBus()).create("svc", "a long and unguessable passphrase")
    keys = ApiKeyStore(db, InvalidationBus(), clock=lambda: T0)
    keys.create(owner.id, ("read",), tenant=None, name="ci", expires_in=30 * 86400)

    def check(day: float) -> tuple[Status, str]:
        ctx = context(load, role_database.app_url, clock=lambda: T0 + day * DAY)
        found = run_ids(ctx, "identity.api-key-rotation")["identity.api-key-rotation"]
        return found.status, found.finding

    assert check(1)[0] is Status.PASS
    keys.create(owner.id, ("read",), tenant=None, name="forever")
    with db.engine.begin() as conn:  # a key from before keys expired by default
        conn.execute(
            sa.update(api_keys).where(api_keys.c.name == "forever").values(expires_at=None)
        )
    db.dispose()
    assert check(1) == (Status.WARN, "1 never expire (forever)")
    assert check(100) == (Status.WARN, "1 never expire (forever); 1 older than 90 days (forever)")


@pytest.mark.req("O4", "A2")
@pytest.mark.asvs("11.6.1")
def test_rs256_fails_in_production_until_a_rotation_moves_the_live_key(
    load: LoadSettings, role_database: RoleDatabase
) -> None:
    db = Database(role_database.admin_url)
    keyring = Keyring(db, bytes(32), alg="RS256", clock=lambda: T0)
    keyring.load()

    def check(**env: str) -> tuple[Status, str]:
        settings = load(**production_env(role_database.app_url + "?sslmode=require", **env))
        ctx = DoctorContext(settings, storage_url=role_database.app_url, clock=lambda: T0)
        found = run_ids(ctx, "tokens.signing-algorithm")["tokens.signing-algorithm"]
        return found.status, found.finding

    status, finding = check(GARRISON_SIGNING_ALG="RS256")
    assert status is Status.FAIL
    assert "GARRISON_SIGNING_ALG=RS256" in finding
    assert "disallowed by ASVS 5.0" in finding
    # the setting changed, the live key not yet: still a fail, naming the key
    status, finding = check(GARRISON_SIGNING_ALG="PS256")
    assert status is Status.FAIL
    assert "the live signing key is RS256" in finding
    Keyring(db, bytes(32), alg="PS256", clock=lambda: T0 + 1).rotate()
    db.dispose()
    status, finding = check()  # the default
    assert status is Status.PASS, finding
    assert "GARRISON_SIGNING_ALG=PS256; live signing key: PS256" in finding
    # outside production the legacy choice is a warning
    dev = DoctorContext(load(GARRISON_SIGNING_ALG="RS256"), storage_url=role_database.app_url)
    assert (
        run_ids(dev, "tokens.signing-algorithm")["tokens.signing-algorithm"].status is Status.WARN
    )


@pytest.mark.req("C3", "O4")
def test_a_host_list_dsn_passes_the_configuration_and_storage_checks(
    load: LoadSettings, role_database: RoleDatabase
) -> None:
    # a standby-or-gone first host, then the real one; libpq keeps the first writable one
    closed = f"127.0.0.1:{free_port()}"
    listed = role_database.app_url.replace("127.0.0.1:5432", f"{closed},127.0.0.1:5432", 1)
    assert closed in listed
    storage_url = listed + "?target_session_attrs=read-write"
    settings = load(**production_env(storage_url + "&sslmode=require"))
    results = run_ids(
        DoctorContext(settings, storage_url=storage_url), *STORAGE_IDS, "operations.database-url"
    )
    assert {i: c.status for i, c in results.items()} == dict.fromkeys(
        (*STORAGE_IDS, "operations.database-url"), Status.PASS
    ), results
