"""PostgreSQL row-level security and least-privilege roles (T4).

Each test gets its own database and uniquely named roles, and drops both.
"""

from __future__ import annotations

import json
import secrets
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa
from starlette.testclient import TestClient

from garrison.app import build_services, prepare_schema
from garrison.config import load_settings
from garrison.errors import ConfigError
from garrison.gateway.asgi import create_app
from garrison.storage import migrate
from garrison.storage.db import Database
from garrison.storage.schema import TENANT_TABLES
from garrison.tenancy.dbroles import RoleNames, runtime_role_problems
from tests.conftest import PASSWORD, MakeSettings, bearer, login
from tests.support import PG_ADMIN_URL, base_env, create_pg_database, drop_pg_database, run_cli

TENANTS = ("acme", "globex", None)


@dataclass(frozen=True)
class Cluster:
    url: str  # superuser
    names: RoleNames

    def as_role(self, role: str) -> str:
        rest = self.url.split("://", 1)[1].split("@", 1)[1]
        return f"postgresql://{role}@{rest}"


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    url = create_pg_database("garrison_rls")
    tag = secrets.token_hex(4)
    names = RoleNames(f"t_mig_{tag}", f"t_rw_{tag}", f"t_ro_{tag}")
    try:
        db = Database(url)
        migrate.upgrade(db)
        db.dispose()
        done = run_cli(
            "db",
            "roles",
            "--json",
            "--migrator",
            names.migrator,
            "--app-rw",
            names.app_rw,
            "--app-ro",
            names.app_ro,
            env=base_env(tmp_path / "data", DATABASE_URL=url),
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert json.loads(done.stdout)["applied"] is True
        _seed(url)
        yield Cluster(url, names)
    finally:
        drop_pg_database(url)
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            for role in (names.migrator, names.app_rw, names.app_ro):
                conn.execute(f'DROP ROLE IF EXISTS "{role}"')


def _seed(url: str) -> None:
    """One row per tenant (and one unscoped) in every tenant-scoped table, as the superuser."""
    with psycopg.connect(url, autocommit=True) as conn:
        for tenant in TENANTS:
            user_id = str(uuid.uuid4())
            label = tenant or "platform"
            conn.execute(
                "INSERT INTO users (id, username, roles, tenant, active, created_at, updated_at,"
                " tokens_valid_after) VALUES (%s, %s, '[]', %s, true, 0, 0, 0)",
                (user_id, f"user-{label}", tenant),
            )
            conn.execute(
                "INSERT INTO api_keys (id, lookup, key_hash, user_id, name, scopes, tenant,"
                " created_at) VALUES (%s, %s, 'h', %s, '', '[]', %s, 0)",
                (str(uuid.uuid4()), f"lk-{label}", user_id, tenant),
            )
            conn.execute(
                "INSERT INTO refresh_families (id, user_id, tenant, created_at, expires_at)"
                " VALUES (%s, %s, %s, 0, 1)",
                (str(uuid.uuid4()), user_id, tenant),
            )
            conn.execute(
                "INSERT INTO vault_secrets (id, tenant, name, ciphertext, key_version, created_at,"
                " updated_at) VALUES (%s, %s, 'db-password', 'x', 1, 0, 0)",
                (str(uuid.uuid4()), tenant),
            )


def _visible(url: str, setting: str | None) -> dict[str, set[str | None]]:
    """The tenants an app connection sees in each table, with ``garrison.tenant`` = setting."""
    seen: dict[str, set[str | None]] = {}
    with psycopg.connect(url) as conn, conn.transaction():
        if setting is not None:
            conn.execute("SELECT set_config('garrison.tenant', %s, true)", (setting,))
        for table in TENANT_TABLES:
            rows = conn.execute(f"SELECT tenant FROM {table}").fetchall()  # noqa: S608
            seen[table] = {row[0] for row in rows}
    return seen


@pytest.mark.req("T4")
def test_t4_app_rw_for_tenant_a_sees_none_of_tenant_b(cluster: Cluster) -> None:
    rw = cluster.as_role(cluster.names.app_rw)
    assert _visible(rw, "acme") == {t: {"acme"} for t in TENANT_TABLES}
    assert _visible(rw, "globex") == {t: {"globex"} for t in TENANT_TABLES}
    assert _visible(rw, "") == {t: {None} for t in TENANT_TABLES}  # unscoped rows only
    assert _visible(rw, None) == {t: {None} for t in TENANT_TABLES}  # never set: the same
    assert _visible(rw, "*") == {t: set(TENANTS) for t in TENANT_TABLES}
    ro = cluster.as_role(cluster.names.app_ro)
    assert _visible(ro, "acme") == {t: {"acme"} for t in TENANT_TABLES}


@pytest.mark.req("T4")
def test_t4_app_rw_cannot_write_across_tenants(cluster: Cluster) -> None:
    rw = cluster.as_role(cluster.names.app_rw)
    with psycopg.connect(rw) as conn, conn.transaction():
        conn.execute("SELECT set_config('garrison.tenant', 'acme', true)")
        hit = conn.execute("UPDATE users SET active = false WHERE tenant = 'globex'")
        assert hit.rowcount == 0
        gone = conn.execute("DELETE FROM vault_secrets WHERE tenant IS DISTINCT FROM 'acme'")
        assert gone.rowcount == 0
    planted = (
        "INSERT INTO vault_secrets (id, tenant, name, ciphertext, key_version,"
        " created_at, updated_at) VALUES ('x', 'globex', 'planted', 'x', 1, 0, 0)"
    )
    moved = "UPDATE users SET tenant = 'globex' WHERE tenant = 'acme'"
    for statement in (planted, moved):
        with psycopg.connect(rw) as conn:
            conn.execute("SELECT set_config('garrison.tenant', 'acme', false)")
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)


@pytest.mark.req("T4", "L7")
def test_t4_app_rw_has_no_ddl_and_cannot_rewrite_the_audit_log(cluster: Cluster) -> None:
    rw = cluster.as_role(cluster.names.app_rw)
    with psycopg.connect(rw) as conn:
        for statement in (
            "ALTER TABLE users DISABLE ROW LEVEL SECURITY",
            "DROP POLICY garrison_tenant_isolation ON users",
            "CREATE TABLE sneaky (id int)",
            "UPDATE audit_log SET outcome = 'success'",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege), conn.transaction():
                conn.execute(statement)


@pytest.mark.req("T4")
def test_t4_the_runtime_check_names_superusers_and_owners(cluster: Cluster) -> None:
    def problems(url: str) -> list[str]:
        db = Database(url)
        try:
            return runtime_role_problems(db)
        finally:
            db.dispose()

    assert problems(cluster.as_role(cluster.names.app_rw)) == []
    assert any("superuser" in p and p.startswith("DATABASE_URL:") for p in problems(cluster.url))
    owner = problems(cluster.as_role(cluster.names.migrator))
    assert any("owns" in p and "users" in p for p in owner)


@pytest.mark.req("T4", "C3")
def test_t4_production_refuses_to_start_as_a_superuser(cluster: Cluster, tmp_path: Path) -> None:
    settings = load_settings(
        {
            "GARRISON_ENV": "production",
            "GARRISON_DOTENV": "/nonexistent",
            "GARRISON_DATA_DIR": str(tmp_path),
        },
        check_production=False,
    )
    superuser = Database(cluster.url)
    app_rw = Database(cluster.as_role(cluster.names.app_rw))
    try:
        with pytest.raises(ConfigError) as caught:
            prepare_schema(settings, superuser)
        assert any("superuser" in p for p in caught.value.problems)
        prepare_schema(settings, app_rw)  # the least-privilege role is accepted
    finally:
        superuser.dispose()
        app_rw.dispose()


@pytest.mark.req("T4", "T3", "A1")
def test_t4_the_service_runs_as_app_rw(cluster: Cluster, make_settings: MakeSettings) -> None:
    svc = build_services(make_settings(DATABASE_URL=cluster.as_role(cluster.names.app_rw)))
    try:
        svc.keyring.load()
        made = svc.users.create("carol", PASSWORD, roles=("support",), tenant="acme")
        assert svc.users.find("carol") == made  # login's lookup, before any tenant is known
        assert {u.username for u in svc.users.list("acme")} == {"user-acme", "carol"}
        assert {u.username for u in svc.users.list(None)} == {"user-platform"}
        with svc.db.begin(tenant="globex") as conn:
            names = conn.execute(sa.text("SELECT username FROM users")).scalars().all()
        assert names == ["user-globex"]
    finally:
        svc.close()


@pytest.mark.req("T4", "T1", "A5")
def test_t4_login_refresh_and_admin_over_http_as_app_rw(
    cluster: Cluster, make_settings: MakeSettings
) -> None:
    svc = build_services(make_settings(DATABASE_URL=cluster.as_role(cluster.names.app_rw)))
    try:
        svc.users.create("dana", PASSWORD, roles=("admin",), tenant="acme")
        with TestClient(create_app(svc), base_url="http://127.0.0.1") as client:
            pair = login(client, "dana")
            fresh = client.post("/auth/refresh", json={"refresh_token": pair["refresh_token"]})
            assert fresh.status_code == 200
            token = {**bearer(fresh.json()["access_token"]), "X-Tenant-ID": "acme"}
            assert client.get("/auth/me", headers=token).json()["tenant"] == "acme"
            listed = client.get("/admin/users", headers=token).json()["users"]
            assert {u["username"] for u in listed} == {"user-acme", "dana"}
            probe = client.get("/admin/users", headers={**token, "X-Tenant-ID": "globex"})
            assert probe.status_code == 403
    finally:
        svc.close()


@pytest.mark.req("T4")
def test_db_roles_dry_run_prints_the_sql_and_changes_nothing(tmp_path: Path) -> None:
    done = run_cli(
        "db",
        "roles",
        "--dry-run",
        "--app-rw",
        "rw_probe_only",
        env=base_env(tmp_path / "data", DATABASE_URL=pg_probe_url()),
    )
    assert done.returncode == 0, done.stderr
    assert 'CREATE ROLE "rw_probe_only" LOGIN NOSUPERUSER' in done.stdout
    assert "NOBYPASSRLS" in done.stdout
    with psycopg.connect(PG_ADMIN_URL) as conn:
        found = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = 'rw_probe_only'").fetchone()
    assert found is None
    bad = run_cli(
        "db",
        "roles",
        "--dry-run",
        "--app-rw",
        'x"; DROP ROLE postgres; --',
        env=base_env(tmp_path / "data"),
    )
    assert bad.returncode == 1
    assert "lower-case letters" in bad.stdout + bad.stderr


def pg_probe_url() -> str:
    return PG_ADMIN_URL
