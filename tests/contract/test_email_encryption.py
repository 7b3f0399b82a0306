"""The user's email is a sensitive field, encrypted at rest (V2; seeds 000 and 002), on SQLite and
PostgreSQL: raw SQL sees no address, only the vault's envelope and a keyed blind index; every reader
(the store, /auth/me, the admin list and export, `garrison users list`, just-in-time provisioning)
still sees it; lookups by email work through the index; revision 0005 and its data step encrypt
the rows that existed before; `garrison vault rewrap` moves the addresses to a new key."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from starlette.testclient import TestClient

from garrison.app import Services, build_services, upgrade_schema
from garrison.gateway.asgi import create_app
from garrison.identity.provisioning import Provisioner
from garrison.keys.sealing import new_secret
from garrison.storage import migrate
from garrison.storage.db import Database
from garrison.storage.schema import users
from garrison.vault import DecryptError
from tests.conftest import PASSWORD, MakeSettings, bearer, login
from tests.support import base_env, create_pg_database, drop_pg_database, run_cli

OLD, NEW = new_secret(), new_secret()
ADDRESSES = {"ada": "Ada.Lovelace@Acme.Test", "bob": "bob@globex.test", "cy": "cy@acme.test"}


def _raw_rows(db: Database) -> list[dict[str, Any]]:
    with db.begin() as conn:
        return [dict(r._mapping) for r in conn.execute(sa.text("SELECT * FROM users"))]


def _assert_no_plaintext(db: Database, *addresses: str) -> None:
    rows = _raw_rows(db)
    assert rows
    dump = repr(rows).lower()
    for address in addresses:
        assert address.lower() not in dump
        assert hashlib.sha256(address.lower().encode()).hexdigest() not in dump  # not unkeyed
    for row in rows:
        assert row["email"] is None
        if row["email_ciphertext"] is not None:
            assert len(row["email_index"]) == 64
            assert row["email_key_version"] is not None


def _populate(svc: Services) -> dict[str, str]:
    ids = {}
    for name, address in ADDRESSES.items():
        tenant = "acme" if "acme" in address.lower() else None
        roles = ("admin",) if name == "ada" else ("user",)
        ids[name] = svc.users.create(name, PASSWORD, email=address, roles=roles, tenant=tenant).id
    svc.users.create("nomail", PASSWORD)
    return ids


@pytest.mark.req("V2")
def test_raw_sql_sees_no_plaintext_email(backend_services: Services) -> None:
    svc = backend_services
    _populate(svc)
    Provisioner(svc.db, svc.users).ensure(
        "corp", "e-77", email="Eve.External@Corp.Test", roles=["user"]
    )
    _assert_no_plaintext(svc.db, *ADDRESSES.values(), "Eve.External@Corp.Test")
    # the same address twice gets two different ciphertexts (a fresh data key each)
    other = svc.users.create("ada2", PASSWORD, email=ADDRESSES["ada"])
    rows = {r["id"]: r for r in _raw_rows(svc.db)}
    ada = svc.users.find("ada")
    assert ada is not None
    assert rows[other.id]["email_ciphertext"] != rows[ada.id]["email_ciphertext"]
    assert rows[other.id]["email_index"] == rows[ada.id]["email_index"]  # found together


@pytest.mark.req("V2")
def test_every_reader_still_sees_the_email(backend_services: Services) -> None:
    svc = backend_services
    ids = _populate(svc)
    assert svc.users.get(ids["ada"]).email == ADDRESSES["ada"]
    assert svc.users.find("bob").email == ADDRESSES["bob"]  # type: ignore[union-attr]
    assert svc.users.find("nomail").email is None  # type: ignore[union-attr]
    listed = {u.username: u.email for u in svc.users.list(None, all_tenants=True)}
    assert listed["cy"] == ADDRESSES["cy"]
    provisioned, _ = Provisioner(svc.db, svc.users).ensure(
        "corp", "e-78", email="jit@corp.test", roles=["user"]
    )
    assert svc.users.get(provisioned.id).email == "jit@corp.test"
    with TestClient(create_app(svc), base_url="http://127.0.0.1") as client:
        token = login(client, "ada")["access_token"]
        me = client.get("/auth/me", headers={**bearer(token), "X-Tenant-ID": "acme"})
        assert me.status_code == 200, me.text
        assert me.json()["email"] == ADDRESSES["ada"]
        exported = client.get(
            f"/admin/users/{ids['cy']}/export", headers={**bearer(token), "X-Tenant-ID": "acme"}
        )
        assert exported.status_code == 200, exported.text
        assert exported.json()["user"]["email"] == ADDRESSES["cy"]
        assert "email_ciphertext" not in exported.json()["user"]
        admin_list = client.get("/admin/users", headers={**bearer(token), "X-Tenant-ID": "acme"})
        assert admin_list.status_code == 200, admin_list.text
        assert ADDRESSES["cy"] in admin_list.text


@pytest.mark.req("V2")
def test_lookup_by_email_uses_the_blind_index(backend_services: Services) -> None:
    svc = backend_services
    ids = _populate(svc)
    found = svc.users.find_by_email("  ada.lovelace@ACME.test ")
    assert [u.id for u in found] == [ids["ada"]]
    assert [u.id for u in svc.users.find_by_email("bob@globex.test")] == [ids["bob"]]
    assert svc.users.find_by_email("nobody@acme.test") == []
    assert svc.users.find_by_email("") == []
    assert svc.users.find_by_email("a\x00@b") == []


@pytest.mark.req("V2")
def test_a_ciphertext_moved_to_another_row_does_not_open(backend_services: Services) -> None:
    svc = backend_services
    ids = _populate(svc)
    with svc.db.begin() as conn:
        stolen = conn.execute(
            sa.select(users.c.email_ciphertext, users.c.email_key_version).where(
                users.c.id == ids["ada"]
            )
        ).one()
        conn.execute(
            sa.update(users)
            .where(users.c.id == ids["bob"])
            .values(email_ciphertext=stolen[0], email_key_version=stolen[1])
        )
    with pytest.raises(DecryptError):
        svc.users.get(ids["bob"])
    assert svc.users.get(ids["ada"]).email == ADDRESSES["ada"]


# -- revision 0005: the rows that were there before ---------------------------------------------
@pytest.fixture(params=["sqlite", "postgres"])
def fresh_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database (not migrated), on each backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'fresh.db'}"
        return
    url = create_pg_database("garrison_email")
    yield url
    drop_pg_database(url)


def _upgrade_to(db: Database, revision: str) -> None:
    cfg = migrate._config(db)
    with db.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


@pytest.mark.req("V2", "O2")
def test_revision_0005_encrypts_the_existing_rows_in_batches(
    fresh_url: str, make_settings: MakeSettings
) -> None:
    db = Database(fresh_url)
    try:
        _upgrade_to(db, "0004")
        with db.begin() as conn:  # rows as release 0004 stored them: plaintext
            for i in range(7):
                conn.execute(
                    sa.text(
                        "INSERT INTO users (id, username, email, roles, active, created_at,"
                        " updated_at, tokens_valid_after) VALUES (:id, :u, :e, '[]', true,"
                        " :t, :t, 0)"
                    ),
                    {"id": f"00000000-0000-0000-0000-00000000000{i}", "u": f"u{i}",
                     "e": f"User{i}@Old.Test", "t": float(i)},
                )  # fmt: skip
        settings = make_settings(DATABASE_URL=fresh_url, SECRET_ENCRYPTION_KEY=OLD)
        steps: list[str] = []
        applied = upgrade_schema(settings, db, steps.append)
        assert applied[0] == "0005"  # and the revisions after it, in order
        assert applied == sorted(applied)
        assert "0005 data: encrypting stored emails" in steps
        _assert_no_plaintext(db, *(f"User{i}@Old.Test" for i in range(7)))
        assert migrate.check(db) == []  # the schema matches the code
        assert upgrade_schema(settings, db) == []  # nothing left to do, twice is harmless
    finally:
        db.dispose()
    svc = build_services(settings)
    try:
        assert svc.users.find("u3").email == "User3@Old.Test"  # type: ignore[union-attr]
        assert [u.username for u in svc.users.find_by_email("user5@old.test")] == ["u5"]
        # the data step itself works in committed batches, each reported
        with svc.db.begin() as conn:
            conn.execute(sa.update(users).values(email="legacy@old.test", email_ciphertext=None))
        batches: list[int] = []
        assert svc.users.seal_plaintext_emails(batch_size=3, progress=batches.append) == 7
        assert batches == [3, 3, 1]
        _assert_no_plaintext(svc.db, "legacy@old.test")
    finally:
        svc.close()


# -- rotation: garrison vault rewrap ------------------------------------------------------------
@pytest.mark.req("V2", "V3")
def test_vault_rewrap_rewraps_the_emails(
    backend_url: str, make_settings: MakeSettings, tmp_path: Path
) -> None:
    svc = build_services(make_settings(DATABASE_URL=backend_url, SECRET_ENCRYPTION_KEY=OLD))
    try:
        ids = _populate(svc)
        old_version = svc.users.emails.keys.current  # type: ignore[union-attr]
        # a replica of the previous release writes a plaintext address meanwhile
        with svc.db.begin() as conn:
            conn.execute(
                sa.update(users)
                .where(users.c.username == "nomail")
                .values(email="Straggler@Old.Test")
            )
        assert svc.users.find("nomail").email == "Straggler@Old.Test"  # type: ignore[union-attr]
    finally:
        svc.close()
    rotated = base_env(
        tmp_path / "data",
        DATABASE_URL=backend_url,
        SECRET_ENCRYPTION_KEY=NEW,
        GARRISON_SECRET_ENCRYPTION_KEYS_OLD=OLD,
    )
    svc = build_services(
        make_settings(
            DATABASE_URL=backend_url,
            SECRET_ENCRYPTION_KEY=NEW,
            GARRISON_SECRET_ENCRYPTION_KEYS_OLD=OLD,
        ),
        migrate_schema=False,  # as production starts: no data step on start
    )
    try:  # before the rewrap: readable and found under the old version
        new_version = svc.users.emails.keys.current  # type: ignore[union-attr]
        assert svc.users.get(ids["bob"]).email == ADDRESSES["bob"]
        assert [u.id for u in svc.users.find_by_email(ADDRESSES["bob"])] == [ids["bob"]]
    finally:
        svc.close()
    # (a development start, as of this CLI command, seals the straggler under the current key)
    status = json.loads(run_cli("vault", "status", "--json", env=rotated).stdout)
    emails_by_version = {v["key_version"]: v["emails"] for v in status["versions"]}
    assert emails_by_version == {old_version: 3, new_version: 1}
    result = run_cli("vault", "rewrap", "--batch-size", "2", "--json", env=rotated)
    assert result.returncode == 0, result.stdout + result.stderr
    emails = json.loads(result.stdout)["emails"]
    assert emails["pending"] == emails["rewrapped"] == 3
    assert emails["failed"] == []
    svc = build_services(make_settings(DATABASE_URL=backend_url, SECRET_ENCRYPTION_KEY=NEW))
    try:  # the old key is gone: every address opens and is found under the new one
        current = svc.users.emails.keys.current  # type: ignore[union-attr]
        assert svc.users.email_versions() == {current: 4}
        for name, address in ADDRESSES.items():
            assert svc.users.get(ids[name]).email == address
            assert [u.id for u in svc.users.find_by_email(address)] == [ids[name]]
        assert svc.users.find("nomail").email == "Straggler@Old.Test"  # type: ignore[union-attr]
        _assert_no_plaintext(svc.db, *ADDRESSES.values(), "Straggler@Old.Test")
    finally:
        svc.close()


@pytest.mark.req("V2")
def test_cli_users_list_shows_the_email(
    backend_url: str, make_settings: MakeSettings, tmp_path: Path
) -> None:
    svc = build_services(make_settings(DATABASE_URL=backend_url))
    try:
        _populate(svc)
    finally:
        svc.close()
    env = base_env(tmp_path / "data", DATABASE_URL=backend_url)
    result = run_cli("users", "list", "--all", "--json", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    listed = {u["username"]: u["email"] for u in json.loads(result.stdout)}
    assert listed["ada"] == ADDRESSES["ada"]
    assert listed["nomail"] is None


@pytest.mark.req("V2", "V3")
def test_rewrap_seals_a_plaintext_address_left_by_an_older_replica(
    backend_url: str, make_settings: MakeSettings
) -> None:
    settings = make_settings(DATABASE_URL=backend_url, SECRET_ENCRYPTION_KEY=NEW)
    build_services(settings).close()  # migrated
    svc = build_services(settings, migrate_schema=False)
    try:
        ids = _populate(svc)
        with svc.db.begin() as conn:  # what a replica of release 0004 writes
            conn.execute(
                sa.update(users)
                .where(users.c.id == ids["bob"])
                .values(email="Bob.New@Globex.Test", email_ciphertext=None, email_index=None)
            )
        assert svc.users.get(ids["bob"]).email == "Bob.New@Globex.Test"
        report = svc.users.rewrap_emails()
        assert report.sealed == 1
        assert report.failed == []
        _assert_no_plaintext(svc.db, "Bob.New@Globex.Test")
        assert [u.id for u in svc.users.find_by_email("bob.new@globex.test")] == [ids["bob"]]
    finally:
        svc.close()
