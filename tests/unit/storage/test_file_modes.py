"""Data files are the owner's only (C6): the SQLite database and its -wal/-shm, audit exports, backups,
the audit JSON-lines copy and development key files are created 0600, their directories 0700, under
the usual umask 022 that would otherwise leave them world-readable."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from garrison.app import build_services
from garrison.audit.event import AuditEvent
from tests.conftest import PASSWORD, MakeSettings
from tests.support import base_env, run_cli


@pytest.fixture(autouse=True)
def usual_umask() -> Iterator[None]:
    old = os.umask(0o022)
    yield
    os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.req("C6")
def test_the_database_and_its_wal_and_shm_files_are_0600(
    make_settings: MakeSettings, tmp_path: Path
) -> None:
    audit_log = tmp_path / "logs" / "audit" / "audit.jsonl"
    svc = build_services(make_settings(AUDIT_LOG_PATH=str(audit_log)))
    try:
        svc.keyring.load()
        svc.users.create("kim", PASSWORD)
        svc.audit.record_sync(AuditEvent(action="test.mode", outcome="success"))
        data = svc.settings.data_dir
        files = [data / "garrison.db", data / "garrison.db-wal", data / "garrison.db-shm"]
        for path in files:
            assert path.exists(), path
            assert mode(path) == 0o600, (path, oct(mode(path)))
        assert mode(data) == 0o700
        for key in data.glob("*.key"):
            assert mode(key) == 0o600, key
        assert mode(audit_log) == 0o600
        assert mode(audit_log.parent) == 0o700
        assert mode(audit_log.parent.parent) == 0o700
    finally:
        svc.close()


@pytest.mark.req("C6")
def test_existing_loose_files_are_tightened(make_settings: MakeSettings, tmp_path: Path) -> None:
    settings = make_settings(AUDIT_LOG_PATH=str(tmp_path / "audit.jsonl"))
    settings.data_dir.mkdir(mode=0o700)
    for name in ("garrison.db", "audit.jsonl"):
        where = settings.data_dir if name == "garrison.db" else tmp_path
        (where / name).touch(mode=0o644)
        (where / name).chmod(0o644)
    svc = build_services(settings)
    try:
        svc.audit.record_sync(AuditEvent(action="test.mode", outcome="success"))
    finally:
        svc.close()
    assert mode(settings.data_dir / "garrison.db") == 0o600
    assert mode(tmp_path / "audit.jsonl") == 0o600


@pytest.mark.slow
@pytest.mark.req("C6", "O1")
def test_exports_and_backups_are_0600(tmp_path: Path) -> None:
    env = base_env(tmp_path / "data")
    made = run_cli(
        "users", "create", "--username", "kim", "--password-stdin", env=env, stdin=PASSWORD
    )
    assert made.returncode == 0, made.stderr
    outputs = {
        "audit.jsonl": ("audit", "export", "--output", str(tmp_path / "audit.jsonl")),
        "audit.csv": ("audit", "export", "--format", "csv", "-o", str(tmp_path / "audit.csv")),
        "user.json": ("users", "export", "kim", "--output", str(tmp_path / "user.json")),
        "backup.gbk": ("backup", "create", str(tmp_path / "backup.gbk")),
    }
    (tmp_path / "audit.csv").write_text("old contents\n")  # an existing export is replaced, 0600
    (tmp_path / "audit.csv").chmod(0o644)
    for name, args in outputs.items():
        done = run_cli(*args, env=env)
        assert done.returncode == 0, (name, done.stderr)
        assert mode(tmp_path / name) == 0o600, (name, oct(mode(tmp_path / name)))
    assert "old contents" not in (tmp_path / "audit.csv").read_text()
