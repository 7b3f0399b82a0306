"""The database handle: one SQLAlchemy engine (SQLite or PostgreSQL via psycopg 3).

Stores take a ``Database`` and open short transactions with ``db.begin(tenant=...)``; on PostgreSQL
that sets ``garrison.tenant`` for the transaction, which row-level security policies read (T4).

A database that cannot be reached (refused, restarting, a connection cut mid-transaction, a pool
that stays exhausted) surfaces from ``begin`` as ``UnavailableError``: 503 with ``Retry-After``,
never a 500, in this one place for every store. PostgreSQL checks each pooled connection before use
(``pool_pre_ping``) and a disconnect empties the pool, so service returns as soon as the server
does, with no manual step.

Every engine hides statement parameters from its errors and logs (``hide_parameters``, C6): a failed
INSERT into ``users`` would otherwise carry the row's argon2id hash into a traceback. Alembic runs on
the same engine. The SQLite file and its directory are the owner's only (0600, 0700).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from garrison.audit.redact import redact_text
from garrison.errors import ConfigError, UnavailableError
from garrison.storage.files import open_private, private_dir, tighten

#: Seconds libpq waits for a connection unless the DSN says otherwise (its default is forever).
CONNECT_TIMEOUT = 10
#: SQLSTATE classes of a failure to reach or log in to the database (not of a statement).
_CONNECT_SQLSTATES = ("08", "28", "3D", "57P")

#: Seconds a client is told to wait (``Retry-After``) while the database is away.
RETRY_AFTER = 2

log = logging.getLogger("garrison.storage")

#: Value of ``garrison.tenant`` that lets a platform-scoped caller see every tenant's rows.
ALL_TENANTS = "*"


def normalise_url(url: str) -> str:
    """Accept the usual DSN spellings and pin the psycopg 3 driver for PostgreSQL.

    libpq's several-host form, ``postgresql://u@h1:5432,h2:5432/db?target_session_attrs=read-write``
    (each host tried in turn until one accepts, and is writable), is rewritten to the
    ``?host=h1,h2&port=5432,5432`` spelling SQLAlchemy reads; libpq gets the same list.
    """
    if url.startswith("postgres://"):
        url = "postgresql://" + url.removeprefix("postgres://")
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    if url.startswith("postgresql+psycopg://"):
        url = _hosts_in_query(url)
    return url


def _hosts_in_query(url: str) -> str:
    scheme, _, rest = url.partition("://")
    end = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    netloc, tail = rest[:end], rest[end:]
    userinfo, at, hostlist = netloc.rpartition("@")
    if "," not in hostlist:
        return url
    hosts: list[str] = []
    ports: list[str] = []
    for member in hostlist.split(","):
        bad = False
        if member.startswith("["):  # [IPv6]:port
            host, bracket, port = member[1:].partition("]")
            bad = not bracket or not (port == "" or port.startswith(":"))
            port = port.removeprefix(":")
        else:
            host, _, port = member.partition(":")
        if bad or not host or (port and not (port.isdigit() and 0 < int(port) < 65536)):
            raise ConfigError([f"DATABASE_URL: cannot read the host {member!r} of its host list"])
        hosts.append(host)
        ports.append(port)
    path, _, query = tail.partition("?")
    listed = "host=" + quote(",".join(hosts), safe=",:")
    if any(ports):
        listed += "&port=" + ",".join(ports)
    query = f"{query}&{listed}" if query else listed
    return f"{scheme}://{userinfo}{at}{path or '/'}?{query}"


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
                _private_sqlite_file(Path(parsed.database))
            self.engine: Engine = sa.create_engine(
                self.url,
                hide_parameters=True,
                connect_args={"timeout": 30, "check_same_thread": False},
                pool_size=pool_size,
                max_overflow=max_overflow,
                pool_timeout=pool_timeout,
            )
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)
            sa.event.listen(self.engine, "begin", _sqlite_begin)
        elif self.dialect == "postgresql":
            timeout = (
                {} if "connect_timeout" in parsed.query else {"connect_timeout": CONNECT_TIMEOUT}
            )
            try:
                self.engine = sa.create_engine(
                    self.url,
                    hide_parameters=True,
                    connect_args=timeout,
                    pool_size=pool_size,
                    max_overflow=max_overflow,
                    pool_timeout=pool_timeout,
                    pool_pre_ping=True,
                )
            except sa.exc.ArgumentError as exc:  # a host list SQLAlchemy cannot read
                raise ConfigError([f"DATABASE_URL: {exc}"]) from None
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
        try:
            with engine.begin() as conn:
                if self.is_postgres:
                    conn.execute(
                        sa.text("SELECT set_config('garrison.tenant', :t, true)"),
                        {"t": "" if tenant is None else tenant},
                    )
                yield conn
        except (sa.exc.DBAPIError, sa.exc.TimeoutError) as exc:
            if not unreachable(exc):
                raise
            self._unavailable(exc)
            raise UnavailableError(
                "database unavailable", dependency="database", retry_after=RETRY_AFTER
            ) from None

    _last_warning = 0.0

    def _unavailable(self, exc: BaseException) -> None:
        """Logged once a second at most (an outage under load is thousands of failures)."""
        now = time.monotonic()
        if now - self._last_warning >= 1.0:
            self._last_warning = now
            log.warning("database unavailable: %s", error_summary(exc))

    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))

    def dispose(self) -> None:
        self.engine.dispose()


def _private_sqlite_file(path: Path) -> None:
    """Create the database file 0600 (in a 0700 directory) before SQLite does: SQLite gives its
    -wal and -shm files the database file's mode, so all three stay the owner's."""
    private_dir(path.parent)
    os.close(open_private(path, os.O_RDWR))
    for suffix in ("-wal", "-shm", "-journal"):
        tighten(path.with_name(path.name + suffix))


def unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` means the database is away rather than that a statement failed: a refused
    or cut connection (SQLAlchemy's disconnect detection), a server starting or shutting down
    (SQLSTATE 08, 57P), or no pooled connection free within ``GARRISON_DB_POOL_TIMEOUT``."""
    if isinstance(exc, sa.exc.TimeoutError):
        return True
    if isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated:
        return True
    return connection_problem(exc) is not None


def connection_problem(exc: BaseException) -> str | None:
    """``DATABASE_URL: cannot connect (...)`` when ``exc`` is a failure to reach or log in to the
    database, else None. The reason is the driver's first line, without the URL or parameters."""
    if not isinstance(exc, sa.exc.OperationalError):
        return None
    orig = exc.orig
    sqlstate = getattr(orig, "sqlstate", None)
    text = str(orig if orig is not None else exc).strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    if sqlstate is not None and not str(sqlstate).startswith(_CONNECT_SQLSTATES):
        return None
    if sqlstate is None and "sqlite" in type(orig).__module__ and "open" not in first:
        return None  # a locked or busy SQLite file is not a connection problem
    return (
        f"DATABASE_URL: cannot connect ({redact_text(first.removeprefix('connection failed: '))})"
    )


def error_summary(exc: BaseException) -> str:
    """One line for a database error, safe to print: the driver's message without its DETAIL
    (which may quote a failing row) and without parameters (hidden by the engine anyway)."""
    orig = getattr(exc, "orig", None)
    text = str(orig if orig is not None else exc).strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    return f"database error: {redact_text(first)}"


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
