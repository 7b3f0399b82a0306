"""Backup and restore as an operator runs them (O1, V1): SQLite to PostgreSQL and back, then
logins, API keys, tokens, vault secrets and the audit chain all work on the restored copy; a
tampered, truncated or wrongly keyed backup is refused with the target left untouched."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from garrison.app import Services, build_services
from garrison.audit.event import AuditEvent
from garrison.audit.writer import AuditWriter
from garrison.identity.service import Client
from garrison.keys.sealing import new_secret
from garrison.storage.schema import metadata
from tests.conftest import PASSWORD, MakeSettings
from tests.support import base_env, create_pg_database, drop_pg_database, run_cli

pytestmark = pytest.mark.slow

#: what travels with a backup: the keys that open it and verify its audit chain
SECRETS = {
    "SECRET_ENCRYPTION_KEY": new_secret(),
    "GARRISON_KEYRING_KEY": new_secret(),
    "GARRISON_AUDIT_KEY": new_secret(),
}


@dataclass
class Site:
    """One deployment: its database, its data dir, and how to reach it in-process or by CLI."""

    url: str
    data_dir: Path
    make_settings: MakeSettings

    @property
    def env(self) -> dict[str, str]:
        return base_env(self.data_dir, DATABASE_URL=self.url, **SECRETS)

    def services(self) -> Services:
        return build_services(self.make_settings(DATABASE_URL=self.url, **SECRETS))

    def cli(self, *args: str, **extra: str) -> Any:
        return run_cli(*args, env=self.env | extra)


@pytest.fixture
def pg_url() -> Iterator[str]:
    url = create_pg_database("garrison_backup")
    yield url
    drop_pg_database(url)


def _site(kind: str, name: str, tmp_path: Path, make_settings: MakeSettings, pg: str) -> Site:
    url = f"sqlite:///{tmp_path / name / 'garrison.db'}" if kind == "sqlite" else pg
    (tmp_path / name).mkdir(exist_ok=True)
    return Site(url, tmp_path / name, make_settings)


@dataclass
class Made:
    token: str
    api_key: str


def populate(svc: Services) -> Made:
    svc.keyring.load()
    svc.users.create("root", PASSWORD, roles=("admin",))
    svc.users.create("ada", PASSWORD, email="ada@acme.test", roles=("admin",), tenant="acme")
    gus = svc.users.create("gus", PASSWORD, roles=("user",), tenant="globex")
    api_key, _ = svc.api_keys.create(gus.id, ("tickets:read",), tenant="globex", name="ci")
    pair = svc.auth.login("ada", PASSWORD, Client(ip="127.0.0.1"))
    svc.vault.put("acme", "db-password", "acme: hunter2", actor="ada")
    svc.vault.put(None, "smtp", "platform: ünïcødé ✓")
    return Made(pair.access_token, api_key)


def dump(svc: Services) -> dict[str, list[dict[str, Any]]]:
    with svc.db.begin() as conn:
        return {
            t.name: [
                dict(r._mapping)
                for r in conn.execute(sa.select(t).order_by(*t.primary_key.columns))
            ]
            for t in metadata.sorted_tables
        }


def _ok(result: Any) -> Any:
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout) if result.stdout.startswith("{") else result.stdout


@pytest.mark.req("O1", "V1", "L7")
@pytest.mark.parametrize(("source", "target"), [("sqlite", "postgres"), ("postgres", "sqlite")])
def test_backup_restores_into_the_other_database_and_everything_works(
    source: str, target: str, tmp_path: Path, make_settings: MakeSettings, pg_url: str
) -> None:
    src = _site(source, "src", tmp_path, make_settings, pg_url)
    dst = _site(target, "dst", tmp_path, make_settings, pg_url)
    svc = src.services()
    try:
        made = populate(svc)
        before = dump(svc)
    finally:
        svc.close()
    backup = tmp_path / "garrison.backup"
    created = _ok(src.cli("backup", "create", str(backup), "--json"))
    assert created["tables"] == {name: len(rows) for name, rows in before.items()}
    assert backup.stat().st_mode & 0o777 == 0o600
    assert b"hunter2" not in backup.read_bytes()
    assert b"ada@acme.test" not in backup.read_bytes()

    restored = _ok(dst.cli("backup", "restore", str(backup), "--json"))
    assert restored["source_dialect"] == ("sqlite" if source == "sqlite" else "postgresql")
    assert restored["tables"] == created["tables"]

    svc = dst.services()
    try:
        after = dump(svc)
        assert {k: v for k, v in after.items() if k != "audit_log"} == {
            k: v for k, v in before.items() if k != "audit_log"
        }
        assert after["audit_log"][: len(before["audit_log"])] == before["audit_log"]
        assert after["audit_log"][-1]["action"] == "admin.backup.restore"
        svc.keyring.load()
        assert svc.auth.login("ada", PASSWORD, Client()).access_token
        assert svc.authenticator.authenticate(f"Bearer {made.token}").username == "ada"
        assert svc.api_keys.authenticate(made.api_key).name == "ci"
        assert svc.vault.get("acme", "db-password")[1] == "acme: hunter2"
        assert svc.vault.get(None, "smtp")[1] == "platform: ünïcødé ✓"
        svc.vault.put("acme", "after-restore", "new rows still get fresh ids")
        svc.audit.record_sync(_event("after.restore"))  # the chain continues after the restore
    finally:
        svc.close()
    verified = _ok(dst.cli("audit", "verify", "--json"))
    assert verified["ok"] is True


def _event(action: str, **details: Any) -> AuditEvent:
    return AuditEvent(action=action, outcome="success", actor="test", details=details)


@pytest.fixture
def backup_and_target(
    tmp_path: Path, make_settings: MakeSettings, pg_url: str
) -> tuple[Path, Site]:
    src = _site("sqlite", "src", tmp_path, make_settings, pg_url)
    svc = src.services()
    try:
        populate(svc)
        assert isinstance(svc.audit, AuditWriter)
        for _ in range(6):  # > 2 MiB of rows: several chunks
            svc.audit.write_batch([_event("bulk", pad="x" * 400) for _ in range(1000)])
    finally:
        svc.close()
    backup = tmp_path / "garrison.backup"
    _ok(src.cli("backup", "create", str(backup)))
    return backup, _site("postgres", "dst", tmp_path, make_settings, pg_url)


def _rows(site: Site) -> int:
    svc = site.services()
    try:
        return sum(len(rows) for rows in dump(svc).values())
    finally:
        svc.close()


def _refused(result: Any, message: str) -> None:
    assert result.returncode == 1, result.stdout + result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


@pytest.mark.req("O1")
def test_tampered_truncated_or_wrongly_keyed_backups_are_refused_and_write_nothing(
    backup_and_target: tuple[Path, Site],
) -> None:
    backup, target = backup_and_target
    data = backup.read_bytes()
    assert len(data) > 2 << 20
    bad = backup.with_name("bad.backup")

    flipped = bytearray(data)
    flipped[len(data) * 2 // 3] ^= 0x20
    bad.write_bytes(bytes(flipped))
    _refused(target.cli("backup", "restore", str(bad)), "integrity check")
    assert _rows(target) == 0

    bad.write_bytes(data[: len(data) - 100])
    _refused(target.cli("backup", "restore", str(bad)), "truncated")
    assert _rows(target) == 0

    other = {"GARRISON_BACKUP_KEY": new_secret()}
    _refused(target.cli("backup", "restore", str(backup), **other), "backup key does not match")
    assert _rows(target) == 0

    _ok(target.cli("backup", "restore", str(backup)))
    assert _rows(target) > 6000


@pytest.mark.req("O1")
def test_a_non_empty_database_is_refused_unless_forced(
    backup_and_target: tuple[Path, Site],
) -> None:
    backup, target = backup_and_target
    _ok(target.cli("backup", "restore", str(backup)))
    _refused(target.cli("backup", "restore", str(backup)), "the database is not empty")
    forced = _ok(target.cli("backup", "restore", str(backup), "--force", "--json"))
    assert forced["tables"]["users"] == 3
    assert _ok(target.cli("audit", "verify", "--json"))["ok"] is True


@pytest.mark.req("O1")
def test_create_refuses_to_overwrite_an_existing_file(
    backup_and_target: tuple[Path, Site], tmp_path: Path, make_settings: MakeSettings, pg_url: str
) -> None:
    backup, _ = backup_and_target
    src = _site("sqlite", "src", tmp_path, make_settings, pg_url)
    _refused(src.cli("backup", "create", str(backup)), "already exists")
