"""The audit trail survives its own database role (L7, T4, L5, O2), on a fresh PostgreSQL.

The set-up is the operator's, in the README's order, on a database with nothing in it:
``garrison db roles`` (as the superuser, passwords from settings), ``garrison db upgrade`` (as the
migrator), then the service as app_rw. The attacks are plain SQL: as app_rw (the service's own
login) and as the superuser (a database-only attacker who holds no Garrison secret).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from starlette.testclient import TestClient

from garrison.app import Services, build_services
from garrison.audit.chain import HASHED_FIELDS, canonical
from garrison.audit.event import AuditEvent
from garrison.gateway.asgi import create_app
from garrison.storage.schema import audit_log
from tests.conftest import PASSWORD, MakeSettings, bearer, login
from tests.support import PG_ADMIN_URL, base_env, create_pg_database, drop_pg_database, run_cli

AUDIT_TABLES = ("audit_log", "audit_checkpoints", "audit_epochs")


@dataclass(frozen=True)
class Deployment:
    url: str  # the superuser
    migrator: str
    app_rw: str
    app_ro: str
    passwords: dict[str, str]
    data: Path

    def as_role(self, role: str) -> str:
        rest = self.url.split("://", 1)[1].split("@", 1)[1]
        return f"postgresql://{role}@{rest}"

    def env(self, **extra: str) -> dict[str, str]:
        return base_env(
            self.data,
            DATABASE_URL=self.as_role(self.app_rw),
            GARRISON_MIGRATOR_DATABASE_URL=self.as_role(self.migrator),
            **extra,
        )


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[Deployment]:
    url = create_pg_database("garrison_auditrole")
    tag = secrets.token_hex(4)
    roles = {"migrator": f"a_mig_{tag}", "app_rw": f"a_rw_{tag}", "app_ro": f"a_ro_{tag}"}
    passwords = {name: secrets.token_urlsafe(32) for name in roles}
    dep = Deployment(
        url, roles["migrator"], roles["app_rw"], roles["app_ro"], passwords, tmp_path / "data"
    )
    try:
        made = run_cli(
            "db",
            "roles",
            "--json",
            "--migrator",
            dep.migrator,
            "--app-rw",
            dep.app_rw,
            "--app-ro",
            dep.app_ro,
            env=base_env(
                dep.data,
                DATABASE_URL=url,
                GARRISON_DB_MIGRATOR_PASSWORD=passwords["migrator"],
                GARRISON_DB_APP_RW_PASSWORD=passwords["app_rw"],
                GARRISON_DB_APP_RO_PASSWORD=passwords["app_ro"],
            ),
        )
        assert made.returncode == 0, made.stdout + made.stderr
        for secret in passwords.values():  # never printed
            assert secret not in made.stdout + made.stderr
        upgraded = run_cli("db", "upgrade", "--json", env=dep.env())
        assert upgraded.returncode == 0, upgraded.stdout + upgraded.stderr
        yield dep
    finally:
        drop_pg_database(url)
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            for role in roles.values():
                conn.execute(f'DROP ROLE IF EXISTS "{role}"')


@pytest.fixture
def service(deployment: Deployment, make_settings: MakeSettings) -> Iterator[Services]:
    """The service as app_rw, sharing the CLI's data dir (and so its audit head file)."""
    svc = build_services(
        make_settings(
            DATABASE_URL=deployment.as_role(deployment.app_rw),
            GARRISON_DATA_DIR=str(deployment.data),
        )
    )
    svc.keyring.load()
    try:
        yield svc
    finally:
        svc.close()


def _fill(svc: Services, count: int = 8) -> None:
    for n in range(1, count + 1):
        svc.audit.record_sync(
            AuditEvent(action="test.event", outcome="success", actor=f"user-{n}", details={"n": n})
        )


def _one(cursor: psycopg.Cursor[Any]) -> Any:
    row = cursor.fetchone()
    assert row is not None
    return row[0]


def _superuser(dep: Deployment, sql: str, params: Any = None) -> int:
    with psycopg.connect(dep.url, autocommit=True) as conn:
        return conn.execute(sql, params).rowcount


def _cli_verify(dep: Deployment) -> tuple[int, dict[str, Any]]:
    done = run_cli("audit", "verify", "--json", env=dep.env())
    return done.returncode, json.loads(done.stdout)


def _http_verify(svc: Services) -> dict[str, Any]:
    if svc.users.find("root") is None:
        svc.users.create("root", PASSWORD, roles=("admin",))
    with TestClient(create_app(svc), base_url="http://127.0.0.1") as client:
        token = login(client, "root")["access_token"]
        response = client.get("/admin/audit/verify", headers=bearer(token))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


@pytest.mark.req("T4", "L7")
def test_app_rw_may_only_insert_and_select_audit_rows(
    deployment: Deployment, service: Services
) -> None:
    _fill(service, 3)  # the service writes as app_rw
    rw = deployment.as_role(deployment.app_rw)
    with psycopg.connect(rw) as conn:
        for table in AUDIT_TABLES:
            change = "outcome = 'failure'" if table == "audit_log" else "created_at = 0"
            for statement in (
                f"UPDATE {table} SET {change}",  # noqa: S608 (constants)
                f"DELETE FROM {table}",  # noqa: S608
                f"TRUNCATE {table}",
            ):
                with pytest.raises(psycopg.errors.InsufficientPrivilege), conn.transaction():
                    conn.execute(statement)
            granted = conn.execute(
                "SELECT has_table_privilege(current_user, %s, 'UPDATE'),"
                " has_table_privilege(current_user, %s, 'DELETE'),"
                " has_table_privilege(current_user, %s, 'TRUNCATE'),"
                " has_table_privilege(current_user, %s, 'INSERT'),"
                " has_table_privilege(current_user, %s, 'SELECT')",
                (table,) * 5,
            ).fetchone()
            assert granted == (False, False, False, True, True), table
    with service.db.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(audit_log)).scalar() == 3
    ro = deployment.as_role(deployment.app_ro)
    with psycopg.connect(ro) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute(
            "INSERT INTO audit_epochs (first_seq, prev_hash, created_at, mac)"
            " VALUES (1, 'x', 0, 'x')"
        )


@pytest.mark.req("T4")
def test_db_roles_sets_each_password_from_its_setting(deployment: Deployment) -> None:
    with psycopg.connect(deployment.url) as conn:
        for key, role in (
            ("migrator", deployment.migrator),
            ("app_rw", deployment.app_rw),
            ("app_ro", deployment.app_ro),
        ):
            stored = _one(
                conn.execute("SELECT rolpassword FROM pg_authid WHERE rolname = %s", (role,))
            )
            assert _scram_matches(stored, deployment.passwords[key]), role
    # running it again with no password settings leaves the passwords alone
    again = run_cli(
        "db",
        "roles",
        "--json",
        "--migrator",
        deployment.migrator,
        "--app-rw",
        deployment.app_rw,
        "--app-ro",
        deployment.app_ro,
        env=base_env(deployment.data, DATABASE_URL=deployment.url),
    )
    assert again.returncode == 0, again.stdout + again.stderr
    assert json.loads(again.stdout)["passwords"] == {
        "migrator": "unchanged",
        "app_rw": "unchanged",
        "app_ro": "unchanged",
    }
    with psycopg.connect(deployment.url) as conn:
        stored = _one(
            conn.execute(
                "SELECT rolpassword FROM pg_authid WHERE rolname = %s", (deployment.app_rw,)
            )
        )
    assert _scram_matches(stored, deployment.passwords["app_rw"])


def _scram_matches(stored: str | None, password: str) -> bool:
    """``SCRAM-SHA-256$iter:salt$StoredKey:ServerKey`` (RFC 5802) derived from ``password``."""
    if not stored or not stored.startswith("SCRAM-SHA-256$"):
        return False
    params, keys = stored.split("$")[1:]
    iterations, salt = params.split(":")
    stored_key, _server_key = keys.split(":")
    salted = hashlib.pbkdf2_hmac(
        "sha256", password.encode(), base64.b64decode(salt), int(iterations)
    )
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    return hashlib.sha256(client_key).digest() == base64.b64decode(stored_key)


@pytest.mark.req("L5", "T4")
def test_prune_runs_as_the_migrator(deployment: Deployment, service: Services) -> None:
    _fill(service, 5)
    time.sleep(1.1)  # older than 1s
    alone = run_cli(  # the runtime login alone may not delete audit rows
        "audit",
        "prune",
        "--older-than",
        "1s",
        "--json",
        env=base_env(deployment.data, DATABASE_URL=deployment.as_role(deployment.app_rw)),
    )
    assert alone.returncode == 1, alone.stdout + alone.stderr
    assert "GARRISON_MIGRATOR_DATABASE_URL" in alone.stdout + alone.stderr
    assert "Traceback" not in alone.stderr
    pruned = run_cli("audit", "prune", "--older-than", "1s", "--json", env=deployment.env())
    assert pruned.returncode == 0, pruned.stdout + pruned.stderr
    assert json.loads(pruned.stdout)["deleted"] == 5
    code, report = _cli_verify(deployment)
    assert (code, report["ok"], report["root_seq"]) == (0, True, 5), report


@pytest.mark.req("L7")
def test_rows_rewritten_and_rehashed_by_the_superuser_are_caught(
    deployment: Deployment, service: Services
) -> None:
    _fill(service)
    assert _cli_verify(deployment)[0] == 0
    # what a database-only attacker can compute: the unkeyed SHA-256 chain over the same fields
    engine = sa.create_engine(deployment.url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.begin() as conn:
        rows = [r._asdict() for r in conn.execute(sa.select(audit_log).order_by(audit_log.c.seq))]
        prev = rows[1]["hash"]
        for row in rows[2:]:
            row |= {"actor": "attacker", "prev_hash": prev}
            body = {name: row[name] for name in HASHED_FIELDS} | {"ts": repr(float(row["ts"]))}
            prev = hashlib.sha256(prev.encode() + b"\n" + canonical(body)).hexdigest()
            conn.execute(
                sa.update(audit_log)
                .where(audit_log.c.seq == row["seq"])
                .values(actor="attacker", prev_hash=row["prev_hash"], hash=prev)
            )
    engine.dispose()
    code, report = _cli_verify(deployment)
    assert (code, report["ok"], report["first_bad_seq"]) == (1, False, 3), report
    assert "altered" in report["problem"]
    http = _http_verify(service)
    assert (http["ok"], http["first_bad_seq"]) == (False, 3), http


@pytest.mark.req("L7")
def test_the_newest_rows_deleted_by_the_superuser_are_caught(
    deployment: Deployment, service: Services
) -> None:
    _fill(service)
    assert _http_verify(service)["ok"]  # (writes the admin's login records too)
    with psycopg.connect(deployment.url) as conn:
        top = _one(conn.execute("SELECT max(seq) FROM audit_log"))
    assert _superuser(deployment, "DELETE FROM audit_log WHERE seq > %s", (top - 2,)) == 2
    code, report = _cli_verify(deployment)
    assert (code, report["ok"], report["first_bad_seq"]) == (1, False, top - 1), report
    assert "cut short" in report["problem"]
    http = _http_verify(service)  # logging in again writes new records after the cut
    assert http["ok"] is False, http
    # the service kept writing after the cut (the login above): the log grew back past the old
    # head, with new records in the old places; still caught, the head file was not moved
    _fill(service, 4)
    code, report = _cli_verify(deployment)
    assert (code, report["ok"]) == (1, False), report
    assert report["first_bad_seq"] == top


@pytest.mark.req("T4", "C3")
def test_db_roles_dry_run_never_prints_a_password_and_production_refuses_a_weak_one(
    tmp_path: Path,
) -> None:
    secret = secrets.token_urlsafe(32)
    env = base_env(tmp_path / "data", DATABASE_URL=PG_ADMIN_URL, GARRISON_DB_APP_RW_PASSWORD=secret)
    for args in (("--dry-run",), ("--dry-run", "--json")):
        done = run_cli("db", "roles", *args, env=env)
        assert done.returncode == 0, done.stdout + done.stderr
        assert secret not in done.stdout + done.stderr
        assert "GARRISON_DB_APP_RW_PASSWORD" in done.stdout or "would set" in done.stdout
    weak = run_cli(
        "db",
        "roles",
        "--dry-run",
        "--json",
        env={**env, "GARRISON_ENV": "production", "GARRISON_DB_APP_RW_PASSWORD": "changeme"},
    )
    assert weak.returncode == 1, weak.stdout + weak.stderr
    assert "GARRISON_DB_APP_RW_PASSWORD" in weak.stdout
    assert "changeme" not in weak.stdout + weak.stderr
