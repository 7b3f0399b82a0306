"""Doctor fixtures: settings as `serve` reads them (without the production refusal), and a
PostgreSQL database served through least-privilege roles, as a production deployment would be."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from garrison import doctor
from garrison.config import SECRET_SETTINGS, Settings, load_settings
from garrison.doctor import Check, DoctorContext
from garrison.keys.sealing import new_secret
from garrison.storage import migrate
from garrison.storage.db import Database
from garrison.tenancy.dbroles import RoleNames, create_roles
from tests.support import PG_ADMIN_URL, create_pg_database, drop_pg_database

LoadSettings = Callable[..., Settings]


@pytest.fixture
def load(tmp_path: Path) -> LoadSettings:
    """Settings from an empty environment plus ``env``, never refused (doctor reports instead)."""

    def make(**env: str) -> Settings:
        base = {"GARRISON_DATA_DIR": str(tmp_path / "data"), "GARRISON_DOTENV": "/nonexistent"}
        return load_settings({**base, **env}, check_production=False)

    return make


def strong_secrets() -> dict[str, str]:
    """What `garrison secrets generate` prints (it calls ``new_secret`` for each setting)."""
    return {name: new_secret() for name in SECRET_SETTINGS}


def production_env(database_url: str, **extra: str) -> dict[str, str]:
    return {
        "GARRISON_ENV": "production",
        "DATABASE_URL": database_url,
        "ENABLE_HSTS": "true",
        **strong_secrets(),
        **extra,
    }


def run_ids(ctx: DoctorContext, *ids: str) -> dict[str, Check]:
    wanted = [spec for spec in doctor.catalogue() if spec.id in ids]
    assert len(wanted) == len(ids), f"unknown check id among {ids}"
    return {check.id: check for check in doctor.run(ctx, wanted)}


@dataclass(frozen=True)
class RoleDatabase:
    """One migrated database; ``admin_url`` connects as the superuser, ``app_url`` as app_rw."""

    admin_url: str
    app_url: str
    names: RoleNames


def _role_url(url: str, role: str) -> str:
    return url.replace("postgres@", f"{role}@", 1)


@pytest.fixture
def role_database() -> Iterator[RoleDatabase]:
    url = create_pg_database("garrison_doctor")
    tag = secrets.token_hex(3)
    names = RoleNames(f"gd_mig_{tag}", f"gd_rw_{tag}", f"gd_ro_{tag}")
    db = Database(url)
    try:
        migrate.upgrade(db)
        create_roles(db, names)
    finally:
        db.dispose()
    yield RoleDatabase(url, _role_url(url, names.app_rw), names)
    drop_pg_database(url)
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        for role in (names.app_ro, names.app_rw, names.migrator):
            conn.execute(f'DROP ROLE IF EXISTS "{role}"')
