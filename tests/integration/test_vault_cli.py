"""``garrison vault status|rewrap`` and ``garrison users export|delete`` as an operator runs them
(V1, V3, V4), and the development key file for the vault."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pyotp
import pytest
import sqlalchemy as sa

from garrison.app import build_services
from garrison.keys.sealing import new_secret
from garrison.storage.schema import audit_log
from tests.conftest import PASSWORD, MakeSettings
from tests.support import base_env, create_admin, run_cli

pytestmark = pytest.mark.slow

OLD, NEW = new_secret(), new_secret()


def _json(result: Any) -> Any:
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout)


@pytest.mark.req("V3", "A14")
def test_rotation_by_configuration_then_rewrap(tmp_path: Path, make_settings: MakeSettings) -> None:
    data = tmp_path / "data"
    svc = build_services(make_settings(SECRET_ENCRYPTION_KEY=OLD))
    try:
        for i in range(25):
            svc.vault.put("acme" if i % 2 else None, f"s{i}", f"value {i}")
        old_version = svc.vault.keys.current
        # a TOTP seed is sealed under the same keys and must survive the rotation too
        alice = svc.users.create("alice", PASSWORD)
        assert svc.auth.mfa is not None
        enrolment = svc.auth.mfa.store.begin_enrolment(alice.id)
        assert enrolment is not None
        assert svc.auth.mfa.store.confirm(alice.id, 0) is not None
    finally:
        svc.close()
    rotated = base_env(
        data, SECRET_ENCRYPTION_KEY=NEW, GARRISON_SECRET_ENCRYPTION_KEYS_OLD=f"{new_secret()},{OLD}"
    )
    status = _json(run_cli("vault", "status", "--json", env=rotated))
    assert status["versions"] == [
        {
            "key_version": old_version,
            "secrets": 25,
            "emails": 0,
            "mfa_seeds": 1,
            "current": False,
            "configured": True,
        }
    ]
    report = _json(run_cli("vault", "rewrap", "--batch-size", "7", "--json", env=rotated))
    assert report["pending"] == report["rewrapped"] == 25
    assert report["mfa_seeds_rewrapped"] == 1
    assert report["current_version"] == status["current_version"]
    status = _json(run_cli("vault", "status", "--json", env=rotated))
    assert [v["current"] for v in status["versions"]] == [True]

    svc = build_services(make_settings(SECRET_ENCRYPTION_KEY=NEW))  # old key dropped
    try:
        assert svc.vault.get("acme", "s3")[1] == "value 3"
        assert svc.vault.get(None, "s24")[1] == "value 24"
        assert svc.auth.mfa is not None
        code = pyotp.TOTP(enrolment.seed).at(time.time())
        assert svc.auth.mfa.store.check_totp(alice.id, code)  # opens under the new key alone
        with svc.db.begin() as conn:
            rewraps = conn.execute(
                sa.select(audit_log.c.details).where(audit_log.c.action == "admin.vault.rewrap")
            ).scalars()
            assert [d["rewrapped"] for d in rewraps] == [25]
    finally:
        svc.close()


@pytest.mark.req("V3")
def test_rewrap_without_the_old_key_fails_clearly(
    tmp_path: Path, make_settings: MakeSettings
) -> None:
    svc = build_services(make_settings(SECRET_ENCRYPTION_KEY=OLD))
    try:
        svc.vault.put(None, "orphan", "value")
    finally:
        svc.close()
    result = run_cli("vault", "rewrap", env=base_env(tmp_path / "data", SECRET_ENCRYPTION_KEY=NEW))
    assert result.returncode == 1
    assert "1 secret(s) do not decrypt under any configured key version" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.req("V1")
def test_development_generates_one_vault_key_file_and_keeps_it(
    make_settings: MakeSettings, tmp_path: Path
) -> None:
    first = build_services(make_settings())
    try:
        first.vault.put(None, "dev", "value")
    finally:
        first.close()
    key_file = tmp_path / "data" / "vault.key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert key_file.read_text() != (tmp_path / "data" / "keyring.key").read_text()
    second = build_services(make_settings())
    try:
        assert second.vault.get(None, "dev")[1] == "value"
    finally:
        second.close()


@pytest.mark.req("V4", "L2")
def test_users_export_and_delete_from_the_command_line(tmp_path: Path) -> None:
    env = base_env(tmp_path / "data")
    for name in ("root", "ada"):
        create_admin(env, PASSWORD, name)
    out = tmp_path / "ada.json"
    summary = _json(run_cli("users", "export", "ada", "--output", str(out), "--json", env=env))
    assert out.stat().st_mode & 0o777 == 0o600
    assert json.loads(out.read_text())["user"]["username"] == "ada"
    assert "password_hash" not in out.read_text()
    to_stdout = run_cli("users", "export", "ada", env=env)
    assert json.loads(to_stdout.stdout)["user"]["id"] == summary["user_id"]

    assert run_cli("users", "delete", "ada", "--reason", " ", env=env).returncode == 2
    gone = _json(
        run_cli("users", "delete", "ada", "--reason", "GDPR request #7", "--json", env=env)
    )
    assert gone["username"] == "ada"
    missing = run_cli("users", "export", "ada", env=env)
    assert missing.returncode == 1
    assert "no user 'ada'" in missing.stderr
    last = run_cli("users", "delete", "root", "--reason", "oops", env=env)
    assert last.returncode == 1
    assert "last admin" in last.stderr

    query = _json(run_cli("audit", "verify", "--json", env=env))
    assert query["ok"] is True
    db = sa.create_engine(f"sqlite:///{tmp_path / 'data' / 'garrison.db'}")
    with db.connect() as conn:
        rows = conn.execute(
            sa.select(audit_log.c.action, audit_log.c.reason, audit_log.c.details)
            .where(audit_log.c.action.in_(["admin.user.export", "admin.user.delete"]))
            .order_by(audit_log.c.seq)
        ).all()
    db.dispose()
    assert [(r.action, r.reason) for r in rows] == [
        ("admin.user.export", None),
        ("admin.user.export", None),
        ("admin.user.delete", "GDPR request #7"),
    ]
    assert all(r.details["user_id"] == summary["user_id"] for r in rows)
