"""``garrison backup restore`` (O1): verify the whole file, then load it in one transaction.

Nothing is written until every chunk has been authenticated and every line parsed (a tampered or
truncated file is refused with the database untouched). The load then reads the file again,
authenticating as it goes, inside a single transaction: should the file change between the passes,
the transaction rolls back and the database is still untouched. Only an empty database is restored
into (``force`` replaces the contents of a non-empty one, in the same transaction), and only at the
schema revision the backup was taken at. Dialects may differ: a SQLite backup loads into PostgreSQL.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import sqlalchemy as sa

from garrison.backup.container import BackupError, Header, read_chunks, read_header
from garrison.backup.dump import NullReporter, Reporter
from garrison.backup.rows import TableCodec
from garrison.storage import migrate
from garrison.storage.db import Database
from garrison.storage.schema import metadata

_INSERT_BATCH = 500
RowSink = Callable[[TableCodec, list[dict[str, Any]]], None]


@dataclass(slots=True)
class Contents:
    header: Header
    tables: dict[str, int] = field(default_factory=dict)


def verify_backup(path: Path, master: bytes) -> Contents:
    """Authenticate and parse the whole file; write nothing. ``BackupError`` names the problem."""
    return _walk(path, master, None, NullReporter())


def restore_backup(
    db: Database,
    path: Path,
    master: bytes,
    *,
    force: bool = False,
    reporter: Reporter | None = None,
) -> Contents:
    """Load a verified backup into ``db``; returns what was restored."""
    contents = verify_backup(path, master)
    revision = migrate.current_revision(db)
    if contents.header["schema_revision"] != revision:
        raise BackupError(
            f"backup was taken at schema revision {contents.header['schema_revision']!r}, the "
            f"database is at {revision!r}; migrate the database to the backup's revision first"
        )
    try:
        with db.begin(immediate=True) as conn:
            _make_room(conn, force)

            def insert(codec: TableCodec, batch: list[dict[str, Any]]) -> None:
                conn.execute(codec.table.insert(), batch)

            _walk(path, master, insert, reporter or NullReporter())
            if db.is_postgres:
                _reset_sequences(conn)
    except sa.exc.DBAPIError as exc:  # e.g. a role without the rights; rolled back
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else type(exc).__name__
        raise BackupError(
            f"restore failed and was rolled back, nothing written: {reason}"
        ) from None
    return contents


def _make_room(conn: sa.Connection, force: bool) -> None:
    used = {
        t.name: n
        for t in metadata.sorted_tables
        if (n := conn.execute(sa.select(sa.func.count()).select_from(t)).scalar_one())
    }
    if not used:
        return
    if not force:
        listing = ", ".join(f"{name}: {n} row(s)" for name, n in used.items())
        raise BackupError(
            f"the database is not empty: {listing}; restore into a fresh database, or pass "
            "--force to replace its contents"
        )
    for table in reversed(metadata.sorted_tables):
        conn.execute(sa.delete(table))


def _reset_sequences(conn: sa.Connection) -> None:
    """Serial columns continue after the restored ids (rows were inserted with explicit ids)."""
    for table in metadata.sorted_tables:
        for column in table.primary_key.columns:
            if not isinstance(column.type, sa.Integer):
                continue
            sequence = conn.execute(
                sa.text("SELECT pg_get_serial_sequence(:t, :c)"),
                {"t": table.name, "c": column.name},
            ).scalar_one()
            if sequence:
                top = conn.execute(sa.select(sa.func.max(column))).scalar_one()
                conn.execute(
                    sa.text("SELECT setval(:s, :v, :called)"),
                    {"s": sequence, "v": top or 1, "called": top is not None},
                )


def _walk(path: Path, master: bytes, sink: RowSink | None, reporter: Reporter) -> Contents:
    try:
        src = path.open("rb")
    except OSError as exc:
        raise BackupError(f"cannot read {path}: {exc.strerror}") from None
    with src:
        header, digest, key = read_header(src, master)
        contents = Contents(header)
        _Loader(header, contents, sink, reporter).run(_lines(src, digest, key))
        return contents


def _lines(src: IO[bytes], digest: bytes, key: bytes) -> Iterator[Any]:
    for chunk in read_chunks(src, digest, key):
        if chunk and not chunk.endswith(b"\n"):
            raise BackupError("backup content is malformed (a chunk ends inside a line)")
        for line in chunk.splitlines():
            try:
                yield json.loads(line)
            except ValueError:
                raise BackupError("backup content is malformed (a line is not JSON)") from None


@dataclass(slots=True)
class _Loader:
    """Walks the lines: table header, rows, end marker ... done. Anything else is refused."""

    header: Header
    contents: Contents
    sink: RowSink | None
    reporter: Reporter

    def run(self, lines: Iterator[Any]) -> None:
        expected = _header_tables(self.header)
        for line in lines:
            if not isinstance(line, dict):
                raise BackupError("backup content is malformed (rows outside a table)")
            if line.get("done") is True:
                self._finish(line, expected, lines)
                return
            name = line.get("table")
            if not expected or name != expected[0]:
                raise BackupError(f"backup content is malformed (unexpected table {name!r})")
            expected.pop(0)
            self._table(line, lines)
        raise BackupError("backup content is incomplete (no end marker)")

    def _table(self, start: dict[str, Any], lines: Iterator[Any]) -> None:
        name = start["table"]
        table = metadata.tables.get(name)
        columns = start.get("columns")
        if table is None or not isinstance(columns, list):
            raise BackupError(f"backup table {name!r} is not part of this schema")
        codec = TableCodec.for_table(table, columns)
        self.reporter.table(name, int(start.get("rows") or 0))
        batch: list[dict[str, Any]] = []
        count = 0
        for line in lines:
            if isinstance(line, list):
                batch.append(codec.decode(line))
                count += 1
                if len(batch) >= _INSERT_BATCH:
                    self._flush(codec, batch)
                    batch = []
                continue
            if isinstance(line, dict) and line.get("end") == name and line.get("rows") == count:
                self._flush(codec, batch)
                self.contents.tables[name] = count
                return
            raise BackupError(f"backup content is malformed (table {name!r} does not end well)")
        raise BackupError(f"backup content is incomplete (table {name!r} has no end)")

    def _flush(self, codec: TableCodec, batch: list[dict[str, Any]]) -> None:
        if batch and self.sink is not None:
            self.sink(codec, batch)
        self.reporter.rows(len(batch))

    def _finish(self, done: dict[str, Any], expected: list[str], lines: Iterator[Any]) -> None:
        if expected or done.get("tables") != self.contents.tables:
            raise BackupError("backup content is incomplete (tables missing before the end)")
        for _extra in lines:
            raise BackupError("backup content is malformed (data after the end marker)")


def _header_tables(header: Header) -> list[str]:
    tables = header.fields.get("tables")
    if not isinstance(tables, list) or not all(isinstance(t, str) for t in tables):
        raise BackupError("backup header is corrupt (tables)")
    unknown = [t for t in tables if t not in metadata.tables]
    if unknown:
        raise BackupError(f"backup holds tables this schema lacks: {', '.join(unknown)}")
    return list(tables)
