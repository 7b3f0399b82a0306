"""The backups check (O1, O4): the age of the newest real backup in the backup directory, warned
after a day and failed after a week (both configurable), instead of a warning that never changes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from garrison.backup import backup_key, create_backup
from garrison.doctor import Check, DoctorContext, Status
from garrison.keys.keyring import DAY
from garrison.keys.sealing import new_secret
from garrison.storage import migrate
from garrison.storage.db import Database
from tests.support import base_env, run_cli
from tests.unit.doctor.conftest import LoadSettings, run_ids

T0 = 1_800_000_000.0
CHECK = "operations.backups"


def make_backup(directory: Path, name: str, created_at: float) -> Path:
    """A real ``garrison backup create`` file, made at ``created_at``."""
    directory.mkdir(parents=True, exist_ok=True)
    db = Database(f"sqlite:///{directory.parent / 'source.db'}")
    try:
        migrate.upgrade(db)
        path = directory / name
        create_backup(db, path, backup_key(new_secret()), now=created_at)
    finally:
        db.dispose()
    return path


def check(load: LoadSettings, now: float, backup_dir: Path | None = None, **env: str) -> Check:
    ctx = DoctorContext(load(**env), backup_dir=backup_dir, clock=lambda: now)
    return run_ids(ctx, CHECK)[CHECK]


@pytest.mark.req("O1", "O4")
@pytest.mark.parametrize(
    ("age_days", "status"),
    [(0.1, Status.PASS), (2.0, Status.WARN), (8.0, Status.FAIL)],
)
def test_the_newest_backups_age_decides(
    load: LoadSettings, tmp_path: Path, age_days: float, status: Status
) -> None:
    backups = tmp_path / "backups"
    make_backup(backups, "old.gbak", T0 - 30 * DAY)
    make_backup(backups, "newest.gbak", T0 - age_days * DAY)
    found = check(load, T0, GARRISON_BACKUP_DIR=str(backups))
    assert found.status is status, found.finding
    assert "newest.gbak" in found.finding
    assert found.scope == "local"


@pytest.mark.req("O1", "O4")
def test_the_thresholds_are_settings(load: LoadSettings, tmp_path: Path) -> None:
    backups = tmp_path / "backups"
    make_backup(backups, "b.gbak", T0 - 2 * DAY)
    relaxed = check(
        load, T0, GARRISON_BACKUP_DIR=str(backups), GARRISON_BACKUP_WARN_DAYS="3",
        GARRISON_BACKUP_FAIL_DAYS="10",
    )  # fmt: skip
    assert relaxed.status is Status.PASS
    strict = check(
        load, T0, GARRISON_BACKUP_DIR=str(backups), GARRISON_BACKUP_WARN_DAYS="0.5",
        GARRISON_BACKUP_FAIL_DAYS="1",
    )  # fmt: skip
    assert strict.status is Status.FAIL


@pytest.mark.req("O1", "O4")
def test_only_real_backups_count(load: LoadSettings, tmp_path: Path) -> None:
    backups = tmp_path / "backups"
    make_backup(backups, "real.gbak", T0 - 9 * DAY)
    (backups / "notes.txt").write_text("not a backup")  # newer, but not a backup
    (backups / ".half.gbak.123.tmp").write_bytes(b"GARRISON-BACKUP\n")  # one being written
    for stray in (backups / "notes.txt", backups / ".half.gbak.123.tmp"):
        os.utime(stray, (T0, T0))
    found = check(load, T0, GARRISON_BACKUP_DIR=str(backups))
    assert found.status is Status.FAIL
    assert "real.gbak" in found.finding


@pytest.mark.req("O1", "O4")
def test_an_empty_or_missing_directory_fails(load: LoadSettings, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "x.txt").write_text("hello")
    assert check(load, T0, backup_dir=empty).status is Status.FAIL
    missing = check(load, T0, backup_dir=tmp_path / "nowhere")
    assert missing.status is Status.FAIL
    assert "nowhere" in missing.finding


@pytest.mark.req("O1", "O4")
def test_without_a_directory_the_fix_names_the_setting(load: LoadSettings) -> None:
    found = check(load, T0)
    assert found.status is Status.WARN
    assert "GARRISON_BACKUP_DIR" in found.fix
    assert "--backup-dir" in found.fix


@pytest.mark.req("O1", "O4")
def test_backup_dir_option_of_the_command(tmp_path: Path) -> None:
    backups = tmp_path / "backups"
    make_backup(backups, "nightly.gbak", 1.0)  # 1970: long overdue
    env = base_env(tmp_path / "data")
    done = run_cli("doctor", "--json", "--backup-dir", str(backups), env=env, timeout=90)
    assert "Traceback" not in done.stderr, done.stderr
    found = {c["id"]: c for c in json.loads(done.stdout)["checks"]}[CHECK]
    assert (found["status"], found["scope"]) == ("fail", "local")
    assert "nightly.gbak" in found["finding"]
