"""``garrison backup prune DIR`` (V5, O1; seed 002's "backup retention policies"): keep the newest N,
or delete those older than a duration, or both (a backup stays if either rule keeps it), judged on
real backups made by ``garrison backup create``; files that are not Garrison backups, backups
still being written, symbolic links and subdirectories are never touched."""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from garrison.app import build_services
from garrison.backup import backup_key, create_backup
from garrison.backup.container import MAGIC
from garrison.config import Settings, load_settings
from garrison.keys.sealing import new_secret
from garrison.storage.schema import audit_log
from tests.support import base_env, run_cli

pytestmark = pytest.mark.slow

SECRETS = {
    "SECRET_ENCRYPTION_KEY": new_secret(),
    "GARRISON_KEYRING_KEY": new_secret(),
    "GARRISON_AUDIT_KEY": new_secret(),
}
DAY = 86400
FUTURE = b'{"format":9,"salt":"AAAA","key_check":"AAAA","created_at":1}'  # a format not known
NEW = ("new-1.gbk", "new-2.gbk", "new-3.gbk")  # oldest first, made by the CLI just now
OLD = {"old-40d.gbk": 40 * DAY, "old-60d.gbk": 60 * DAY}  # made by create_backup, back-dated


@dataclass
class Site:
    data_dir: Path
    backups: Path
    foreign: dict[str, bytes]  # what must survive every prune, byte for byte

    @property
    def env(self) -> dict[str, str]:
        return base_env(self.data_dir, **SECRETS)

    def prune(self, *args: str) -> Any:
        return run_cli("backup", "prune", str(self.backups), *args, env=self.env)

    def present(self) -> set[str]:
        return {p.name for p in self.backups.iterdir()}


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Five real backups, made once: three by `garrison backup create`, two back-dated."""
    root = tmp_path_factory.mktemp("made")
    data, out = root / "data", root / "backups"
    out.mkdir()
    env = base_env(data, **SECRETS)
    for name in NEW:
        result = run_cli("backup", "create", str(out / name), env=env)
        assert result.returncode == 0, result.stderr
        time.sleep(0.05)
    svc = build_services(_settings(data))
    try:
        master = backup_key(SECRETS["SECRET_ENCRYPTION_KEY"])
        for name, age in OLD.items():
            create_backup(svc.db, out / name, master, now=time.time() - age)
    finally:
        svc.close()
    return root


def _settings(data: Path) -> Settings:
    return load_settings(base_env(data, **SECRETS))


@pytest.fixture
def site(made: Path, tmp_path: Path) -> Site:
    data = tmp_path / "data"
    shutil.copytree(made / "data", data)
    backups = tmp_path / "backups"
    shutil.copytree(made / "backups", backups)
    real = (backups / "new-1.gbk").read_bytes()
    foreign = {
        "notes.txt": b"not a backup\n",
        "fake.gbk": MAGIC + b"\x00\x00\x00\x05{oops",  # the magic, then no usable header
        "other-format.gbk": MAGIC + len(FUTURE).to_bytes(4, "big") + FUTURE,
        ".new-4.gbk.4242.tmp": real,  # a backup still being written by `backup create`
    }
    for name, content in foreign.items():
        (backups / name).write_bytes(content)
    (backups / "link.gbk").symlink_to(backups / "old-60d.gbk")
    (backups / "sub").mkdir()
    (backups / "sub" / "old-copy.gbk").write_bytes((backups / "old-60d.gbk").read_bytes())
    return Site(data, backups, foreign)


def _untouched(site: Site) -> None:
    for name, content in site.foreign.items():
        assert (site.backups / name).read_bytes() == content
    assert (site.backups / "link.gbk").is_symlink()
    assert (site.backups / "sub" / "old-copy.gbk").is_file()


def _names(entries: list[dict[str, Any]]) -> set[str]:
    return {Path(e["file"]).name for e in entries}


@pytest.mark.req("V5", "O1")
def test_keep_the_newest_n_dry_run_then_for_real(site: Site) -> None:
    before = site.present()
    dry = site.prune("--keep", "2", "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    report = json.loads(dry.stdout)
    assert report["dry_run"] is True
    assert _names(report["kept"]) == {"new-2.gbk", "new-3.gbk"}
    assert _names(report["deleted"]) == {"new-1.gbk", *OLD}
    assert site.present() == before  # a dry run deletes nothing
    skipped = {Path(s["file"]).name: s["reason"] for s in report["skipped"]}
    assert set(skipped) == {*site.foreign, "link.gbk", "sub"}
    assert "being written" in skipped[".new-4.gbk.4242.tmp"]
    assert "symbolic link" in skipped["link.gbk"]
    assert "not a Garrison backup" in skipped["fake.gbk"]
    assert "format" in skipped["other-format.gbk"]

    real = site.prune("--keep", "2", "--json")
    assert real.returncode == 0, real.stderr
    assert _names(json.loads(real.stdout)["deleted"]) == {"new-1.gbk", *OLD}
    assert site.present() == before - {"new-1.gbk", *OLD}
    _untouched(site)
    # the deletion is audited, with the names of what went
    svc = build_services(_settings(site.data_dir), migrate_schema=False)
    try:
        with svc.db.begin() as conn:
            rows = conn.execute(
                sa.select(audit_log.c.details).where(audit_log.c.action == "admin.backup.prune")
            ).all()
    finally:
        svc.close()
    assert len(rows) == 1
    assert set(rows[0].details["deleted"]) == {"new-1.gbk", *OLD}


@pytest.mark.req("V5")
def test_older_than_deletes_by_the_age_in_each_header(site: Site) -> None:
    for name in NEW:  # a copy resets mtimes; the header's creation time is what counts
        os.utime(site.backups / name, (time.time() - 90 * DAY,) * 2)
    result = site.prune("--older-than", "30d", "--json")
    assert result.returncode == 0, result.stderr
    assert _names(json.loads(result.stdout)["deleted"]) == set(OLD)
    assert {*NEW} <= site.present()
    assert not set(OLD) & site.present()
    _untouched(site)


@pytest.mark.req("V5")
def test_both_rules_keep_what_either_keeps(site: Site) -> None:
    # --keep 4 keeps old-40d although it is older than 30 days; only old-60d is kept by neither
    result = site.prune("--keep", "4", "--older-than", "30d", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert _names(report["deleted"]) == {"old-60d.gbk"}
    assert _names(report["kept"]) == {*NEW, "old-40d.gbk"}
    assert report["freed_bytes"] > 0
    # and --older-than keeps young backups beyond --keep: 1 by count, the rest by age
    again = json.loads(site.prune("--keep", "1", "--older-than", "45d", "--json").stdout)
    assert again["deleted"] == []
    _untouched(site)


@pytest.mark.req("V5")
def test_human_output_names_each_file_and_shows_progress(site: Site) -> None:
    result = site.prune("--older-than", "50d")
    assert result.returncode == 0, result.stderr
    assert "deleted" in result.stdout
    assert "old-60d.gbk" in result.stdout
    assert "left alone" in result.stdout
    assert "judging" in result.stderr  # the progress bars go to stderr
    assert "old-40d.gbk" in site.present()


@pytest.mark.req("V5")
@pytest.mark.parametrize(
    "args",
    [
        pytest.param((), id="no-rule"),
        pytest.param(("--older-than", "soon"), id="bad-duration"),
        pytest.param(("--older-than", "0d"), id="zero-duration"),
        pytest.param(("--keep", "0"), id="keep-zero"),
        pytest.param(("--keep", "many"), id="keep-not-a-number"),
    ],
)
def test_usage_errors_exit_2_and_delete_nothing(site: Site, args: tuple[str, ...]) -> None:
    before = site.present()
    result = site.prune(*args)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    assert site.present() == before


@pytest.mark.req("V5")
def test_a_missing_directory_is_a_usage_error(site: Site) -> None:
    result = run_cli("backup", "prune", str(site.backups / "nope"), "--keep", "1", env=site.env)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr


@pytest.mark.req("V5", "O1")
def test_a_kept_backup_still_restores(site: Site) -> None:
    assert site.prune("--keep", "1").returncode == 0
    target = site.data_dir.parent / "restored"
    env = base_env(target, **SECRETS)
    restored = run_cli("backup", "restore", str(site.backups / "new-3.gbk"), "--json", env=env)
    assert restored.returncode == 0, restored.stderr
    assert json.loads(restored.stdout)["tables"]
