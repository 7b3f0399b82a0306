"""Migrations are explicit in production; `garrison db check` finds pending work and drift (O2, O3)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from garrison.app import build_services, open_database
from garrison.config import Settings
from garrison.errors import ConfigError
from garrison.storage import migrate
from garrison.storage.db import Database
from tests.conftest import MakeSettings
from tests.support import base_env, create_pg_database, drop_pg_database, run_cli


@pytest.mark.req("O2")
def test_upgrade_then_check_is_clean(backend_url: str) -> None:
    db = Database(backend_url)
    applied = migrate.upgrade(db)
    assert applied == [] or applied[-1] == migrate.head_revision(db)
    assert migrate.check(db) == []
    assert migrate.current_revision(db) == migrate.head_revision(db)
    db.dispose()


@pytest.mark.req("O2")
def test_check_reports_drift(backend_url: str) -> None:
    db = Database(backend_url)
    migrate.upgrade(db)
    with db.engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE users ADD COLUMN smuggled VARCHAR(10)"))
    problems = migrate.check(db)
    assert problems
    assert any("smuggled" in p for p in problems)
    db.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database no migration has touched."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    url = create_pg_database()
    yield url
    drop_pg_database(url)


@pytest.mark.req("O2")
def test_production_never_migrates_by_itself(
    make_settings: MakeSettings, empty_database: str
) -> None:
    settings = make_settings(DATABASE_URL=empty_database)
    production = Settings.model_validate({**settings.model_dump(), "env": "production"})
    with pytest.raises(ConfigError, match="garrison db upgrade"):
        build_services(production)
    db = open_database(production)
    assert migrate.current_revision(db) is None  # nothing was applied behind the operator's back
    db.dispose()


@pytest.mark.req("O2")
def test_cli_db_check_and_upgrade_exit_codes(tmp_path: Path) -> None:
    env = base_env(tmp_path / "data")
    pending = run_cli("db", "check", env=env)
    assert pending.returncode == 1
    assert "pending migration" in pending.stderr
    upgraded = run_cli("db", "upgrade", "--json", env=env)
    assert upgraded.returncode == 0, upgraded.stderr
    assert (
        json.loads(upgraded.stdout)["revision"] == "0001" or json.loads(upgraded.stdout)["applied"]
    )
    clean = run_cli("db", "check", "--json", env=env)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert json.loads(clean.stdout)["problems"] == []


@pytest.mark.req("O3")
def test_pool_sizes_reach_the_engine(make_settings: MakeSettings, pg_database: str) -> None:
    settings = make_settings(
        DATABASE_URL=pg_database, GARRISON_DB_POOL_SIZE=3, GARRISON_DB_MAX_OVERFLOW=2
    )
    db = open_database(settings)
    assert db.engine.pool.size() == 3  # type: ignore[attr-defined]
    assert db.engine.pool._max_overflow == 2  # type: ignore[attr-defined]
    db.dispose()


@pytest.mark.req("O3")
def test_pool_size_is_validated(make_settings: MakeSettings) -> None:
    with pytest.raises(ConfigError, match="GARRISON_DB_POOL_SIZE"):
        make_settings(GARRISON_DB_POOL_SIZE=0)
