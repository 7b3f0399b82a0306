"""The database handle: one SQLAlchemy engine (SQLite or PostgreSQL via psycopg 3).

Stores take a ``Database`` and open short transactions with ``db.begin(tenant=...)``; on PostgreSQL
that sets ``garrison.tenant`` for the transaction, which row-level security policies read (T4).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from garrison.errors import ConfigError

#: Value of ``garrison.tenant`` that lets a platform-scoped caller see every tenant's rows.
ALL_TENANTS = "*"


def normalise_url(url: str) -> str:
    """Accept the usual DSN spellings and pin the psycopg 3 driver for PostgreSQL."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url.removeprefix("postgres://")
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return url


class Database:
    def __init__(
        self,
        url: str,
        *,
        pool_size: int = 10,
        max_overflow: int = 10,
        pool_timeout: float = 10.0,
    ) -> None:
        self.url = normalise_url(url)
        try:
            parsed = sa.engine.make_url(self.url)
        except sa.exc.ArgumentError:
            raise ConfigError(
                [f"DATABASE_URL: not a database URL: {url.rsplit('@', maxsplit=1)[-1]!r}"]
            ) from None
        self.dialect = parsed.get_backend_name()
        if self.dialect == "sqlite":
            if parsed.database and parsed.database != ":memory:":
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            self.engine: Engine = sa.create_engine(
                self.url,
                connect_args={"timeout": 30, "check_same_thread": False},
                pool_size=pool_size,
                max_overflow=max_overflow,
                pool_timeout=pool_timeout,
            )
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)
            sa.event.listen(self.engine, "begin", _sqlite_begin)
        elif self.dialect == "postgresql":
            self.engine = sa.create_engine(
                self.url,
                pool_size=pool_size,
                max_overflow=max_overflow,
                pool_timeout=pool_timeout,
                pool_pre_ping=True,
            )
        else:
            raise ConfigError([f"DATABASE_URL: unsupported database {self.dialect!r}"])

    @property
    def is_postgres(self) -> bool:
        return self.dialect == "postgresql"

    @contextmanager
    def begin(
        self, tenant: str | None = ALL_TENANTS, *, immediate: bool = False
    ) -> Iterator[Connection]:
        """A transaction; on PostgreSQL scoped to ``tenant`` for RLS (None: unscoped rows only).

        ``immediate`` takes SQLite's write lock at the start (a read-then-write transaction that
        must not fail to upgrade its lock under a concurrent writer).
        """
        engine = (
            self.engine.execution_options(garrison_immediate=True) if immediate else self.engine
        )
        with engine.begin() as conn:
            if self.is_postgres:
                conn.execute(
                    sa.text("SELECT set_config('garrison.tenant', :t, true)"),
                    {"t": "" if tenant is None else tenant},
                )
            yield conn

    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))

    def dispose(self) -> None:
        self.engine.dispose()


def _sqlite_pragmas(dbapi_conn: object, _record: object) -> None:
    dbapi_conn.isolation_level = None  # type: ignore[attr-defined]  # we issue BEGIN ourselves
    cursor = dbapi_conn.cursor()  # type: ignore[attr-defined]
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _sqlite_begin(conn: Connection) -> None:
    immediate = conn.get_execution_options().get("garrison_immediate", False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")
