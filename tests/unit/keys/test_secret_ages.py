"""Secret settings get a first-seen date and a rotate-by date, reported like signing keys' (C5);
the database holds a keyed fingerprint, never the secret nor a plain hash of it (C6)."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import pytest
import sqlalchemy as sa

from garrison.config import Settings
from garrison.config.secret_values import configured_values, secret_values
from garrison.doctor import DoctorContext, Status
from garrison.keys.sealing import new_secret
from garrison.keys.secret_ages import SecretAges
from garrison.storage import migrate
from garrison.storage.db import Database
from tests.conftest import MakeSettings
from tests.jose import FakeClock
from tests.support import LiveServer, base_env, run_cli
from tests.unit.doctor.conftest import run_ids

DAY = 86400


def _env() -> dict[str, str]:
    return {
        "GARRISON_KEYRING_KEY": new_secret(),
        "SECRET_ENCRYPTION_KEY": new_secret(),
        "GARRISON_SESSION_SECRET": new_secret(),
    }


def _ages(url: str, clock: FakeClock) -> SecretAges:
    db = Database(url)
    migrate.upgrade(db)
    return SecretAges(db, rotate_days=90, clock=clock)


def _dump(db: Database) -> str:
    with db.engine.connect() as conn:
        return json.dumps(
            [list(r) for r in conn.execute(sa.text("SELECT * FROM secret_fingerprints"))]
        )


@pytest.mark.req("C5", "C6")
def test_first_seen_is_recorded_once_and_the_secret_never_stored(
    make_settings: MakeSettings, backend_url: str
) -> None:
    clock = FakeClock()
    env = _env()
    settings = make_settings(**env)
    ages = _ages(backend_url, clock)
    try:
        ages.observe(configured_values(settings))
        clock.advance(10 * DAY)
        ages.observe(configured_values(settings))  # a restart, same values
        report = {a.name: a for a in ages.report(secret_values(settings))}
        stored = _dump(ages.db)
    finally:
        ages.db.dispose()
    for name in env:
        assert report[name].state == "recorded"
        assert report[name].first_seen_at == pytest.approx(clock() - 10 * DAY)
        assert report[name].rotate_by == pytest.approx(clock() - 10 * DAY + 90 * DAY)
        assert report[name].overdue is False
    assert report["GARRISON_BACKUP_KEY"].state == "unset"
    for value in env.values():
        raw = base64.urlsafe_b64decode(value + "=")
        for form in (
            value,
            hashlib.sha256(value.encode()).hexdigest(),
            hashlib.sha256(raw).hexdigest(),
            raw.hex(),
        ):
            assert form not in stored


@pytest.mark.req("C5")
def test_a_rotated_secret_starts_its_clock_again(
    make_settings: MakeSettings, tmp_path: Path
) -> None:
    clock = FakeClock()
    env = _env()
    ages = _ages(f"sqlite:///{tmp_path / 'ages.db'}", clock)
    try:
        ages.observe(configured_values(make_settings(**env)))
        clock.advance(100 * DAY)
        rotated = make_settings(**{**env, "SECRET_ENCRYPTION_KEY": new_secret()})
        before = {a.name: a for a in ages.report(secret_values(rotated))}
        assert before["SECRET_ENCRYPTION_KEY"].state == "changed"  # set, not yet seen by a start
        assert before["GARRISON_KEYRING_KEY"].overdue
        ages.observe(configured_values(rotated))
        after = {a.name: a for a in ages.report(secret_values(rotated))}
    finally:
        ages.db.dispose()
    assert after["SECRET_ENCRYPTION_KEY"].state == "recorded"
    assert after["SECRET_ENCRYPTION_KEY"].first_seen_at == pytest.approx(clock())
    assert not after["SECRET_ENCRYPTION_KEY"].overdue
    assert after["GARRISON_KEYRING_KEY"].overdue  # the others keep their dates
    assert after["GARRISON_KEYRING_KEY"].first_seen_at == pytest.approx(clock() - 100 * DAY)


def _doctor(settings: Settings, url: str, clock: FakeClock) -> tuple[Status, str]:
    ctx = DoctorContext(settings, storage_url=url, clock=clock)
    try:
        found = run_ids(ctx, "identity.secret-rotation")["identity.secret-rotation"]
    finally:
        ctx.close()
    return found.status, found.finding


@pytest.mark.req("C5", "O4")
def test_doctor_reports_overdue_secrets_by_name(
    make_settings: MakeSettings, tmp_path: Path
) -> None:
    clock = FakeClock()
    url = f"sqlite:///{tmp_path / 'ages.db'}"
    settings = make_settings(**_env())
    ages = _ages(url, clock)
    status, finding = _doctor(settings, url, clock)
    assert status is Status.WARN  # set, but no start has recorded them yet
    assert "GARRISON_KEYRING_KEY" in finding
    ages.observe(configured_values(settings))
    clock.advance(30 * DAY)
    status, finding = _doctor(settings, url, clock)
    assert status is Status.PASS, finding
    clock.advance(61 * DAY)
    status, finding = _doctor(settings, url, clock)
    ages.db.dispose()
    assert status is Status.FAIL
    for name in ("GARRISON_KEYRING_KEY", "SECRET_ENCRYPTION_KEY", "GARRISON_SESSION_SECRET"):
        assert name in finding
    assert "91 days" in finding


@pytest.mark.slow
@pytest.mark.req("C5")
def test_serve_records_and_secrets_status_reports(tmp_path: Path) -> None:
    env = base_env(tmp_path / "data", **_env())
    before = run_cli("secrets", "status", "--json", env=env)
    assert before.returncode == 0, before.stderr
    assert {a["name"]: a["state"] for a in json.loads(before.stdout)}["GARRISON_KEYRING_KEY"] in {
        "unrecorded",
    }
    with LiveServer(env):
        pass
    done = run_cli("secrets", "status", "--json", env=env)
    assert done.returncode == 0, done.stderr
    ages = {a["name"]: a for a in json.loads(done.stdout)}
    assert ages["GARRISON_KEYRING_KEY"]["state"] == "recorded"
    assert ages["GARRISON_KEYRING_KEY"]["rotate_by"] - ages["GARRISON_KEYRING_KEY"][
        "first_seen_at"
    ] == pytest.approx(90 * DAY)
    assert ages["GARRISON_BACKUP_KEY"]["state"] == "unset"
    human = run_cli("secrets", "status", env=env)
    assert human.returncode == 0
    assert "GARRISON_KEYRING_KEY" in human.stdout
    assert "rotate by" in human.stdout
    for value in _values(env):
        assert value not in human.stdout + done.stdout


def _values(env: dict[str, str]) -> list[str]:
    return [v for k, v in env.items() if k.endswith(("_KEY", "_SECRET"))]
