"""``garrison backup create`` (O1): every table, from one consistent snapshot, into one container.

The plaintext inside the container is JSON lines, table by table (in foreign-key order)::

    {"table": "users", "columns": [...], "rows": 3}   then one JSON array per row, then
    {"end": "users", "rows": 3}   ...   and finally {"done": true, "tables": {"users": 3, ...}}

Rows are streamed from a server-side cursor and sealed a chunk at a time, so memory stays flat
however large the audit log is. The file is written beside its destination and renamed into place
only when complete (mode 0600): a crash never leaves a half backup under the real name.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import sqlalchemy as sa

from garrison.backup.container import CHUNK_BYTES, BackupError, ChunkWriter
from garrison.backup.rows import TableCodec
from garrison.storage import migrate
from garrison.storage.db import ALL_TENANTS, Database
from garrison.storage.schema import metadata

_FETCH = 1000


class Reporter(Protocol):
    """Progress: a table starts (with its row count), then rows are done."""

    def table(self, name: str, total: int) -> None: ...

    def rows(self, count: int) -> None: ...


class NullReporter:
    """No progress to show (library use, tests)."""

    def table(self, name: str, total: int) -> None:
        pass

    def rows(self, count: int) -> None:
        pass


@contextmanager
def snapshot(db: Database) -> Iterator[sa.Connection]:
    """A read transaction that sees one point in time, every tenant's rows.

    PostgreSQL: REPEATABLE READ. SQLite (WAL): a read transaction sees the database as of its
    first read, which is the same guarantee.
    """
    options: dict[str, Any] = {"isolation_level": "REPEATABLE READ"} if db.is_postgres else {}
    with db.engine.connect().execution_options(**options) as conn, conn.begin():
        if db.is_postgres:
            conn.execute(
                sa.text("SELECT set_config('garrison.tenant', :t, true)"), {"t": ALL_TENANTS}
            )
        yield conn


class _LineBuffer:
    """JSON lines collected into chunks of about ``CHUNK_BYTES``, each ending at a line end."""

    def __init__(self, writer: ChunkWriter) -> None:
        self.writer = writer
        self.parts: list[bytes] = []
        self.size = 0

    def line(self, value: Any) -> None:
        data = json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"
        self.parts.append(data)
        self.size += len(data)
        if self.size >= CHUNK_BYTES:
            self.flush()

    def flush(self) -> None:
        if self.parts:
            self.writer.write(b"".join(self.parts))
            self.parts, self.size = [], 0


def create_backup(
    db: Database, path: Path, master: bytes, *, reporter: Reporter | None = None, now: float
) -> dict[str, int]:
    """Write the backup to ``path`` (refused if it exists); returns rows per table."""
    report = reporter or NullReporter()
    if path.exists():
        raise BackupError(f"{path} already exists; choose another name or remove it")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        raise BackupError(f"cannot write {path}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as out, snapshot(db) as conn:
            counts = _write(conn, db, out, master, report, now)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except sa.exc.DBAPIError as exc:
        tmp.unlink(missing_ok=True)
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else type(exc).__name__
        raise BackupError(f"cannot read the database: {reason}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return counts


def _write(
    conn: sa.Connection, db: Database, out: Any, master: bytes, report: Reporter, now: float
) -> dict[str, int]:
    tables = list(metadata.sorted_tables)
    header = {
        "created_at": now,
        "source_dialect": db.dialect,
        "schema_revision": migrate.current_revision(db),
        "tables": [t.name for t in tables],
    }
    writer = ChunkWriter(out, master, header)
    lines = _LineBuffer(writer)
    counts: dict[str, int] = {}
    for table in tables:
        total = conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
        codec = TableCodec.for_table(table)
        report.table(table.name, total)
        lines.line({"table": table.name, "columns": list(codec.columns), "rows": total})
        written = 0
        order = list(table.primary_key.columns)
        result = conn.execution_options(stream_results=True, yield_per=_FETCH).execute(
            sa.select(*[table.c[n] for n in codec.columns]).order_by(*order)
        )
        for batch in result.partitions(_FETCH):
            for row in batch:
                lines.line(codec.encode(row))
            written += len(batch)
            report.rows(len(batch))
        lines.line({"end": table.name, "rows": written})
        counts[table.name] = written
    lines.line({"done": True, "tables": counts})
    lines.flush()
    writer.close()
    return counts
