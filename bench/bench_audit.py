"""Audit write throughput into PostgreSQL: the hash chain against plain inserts (L1, L7).

    uv run python bench/bench_audit.py [--records 20000] [--batch 500] [--callers 2000]

Floor: the same rows inserted into the same table in the same batches, unchained (no chain lock,
no head read, no hashing). The chained runs use the HMAC chain and the head file (in a temporary
directory), as the service does. Then the chained writer at that batch size, and end to end through the
group-commit path: many concurrent ``await record(e)`` callers (as request handlers are), and
threads calling ``record_sync`` (as worker threads are). Prints records/s and the ratio to the floor.
Needs the local PostgreSQL (``GARRISON_TEST_PG`` or postgresql://postgres@127.0.0.1:5432/postgres).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
import sqlalchemy as sa

from garrison.audit.chain import ChainKey
from garrison.audit.event import AuditEvent
from garrison.audit.head import AuditSeal, HeadFile
from garrison.audit.writer import AuditWriter, _row, insert_rows
from garrison.storage import migrate
from garrison.storage.db import Database
from garrison.storage.schema import audit_log

ADMIN = os.environ.get("GARRISON_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


def _event(n: int) -> AuditEvent:
    return AuditEvent(
        action="auth.login",
        outcome="failure",
        actor=f"user-{n % 997}",
        tenant="acme",
        ip="10.1.2.3",
        user_agent="bench/1.0",
        reason="bad password",
        request_id=f"req-{n:08d}",
        details={"username": f"user-{n % 997}", "attempt": n},
    )


KEY = ChainKey(os.urandom(32))
_HEADS = tempfile.TemporaryDirectory(prefix="garrison-bench-")


def _writer(db: Database) -> AuditWriter:
    """A writer as the service has one; a fresh head file each time (the tables are emptied)."""
    path = Path(_HEADS.name) / f"head-{secrets.token_hex(4)}.json"
    return AuditWriter(db, AuditSeal(KEY, HeadFile(path, KEY)))


def _reset(db: Database) -> None:
    with db.engine.begin() as conn:
        conn.execute(sa.text("TRUNCATE audit_log, audit_checkpoints"))


copy_floor_rate: list[float] = []


def _timed(label: str, records: int, run: Callable[[], None], floor: float | None) -> float:
    started = time.perf_counter()
    run()
    rate = records / (time.perf_counter() - started)
    ratio = f"   {floor / rate:5.2f}x the floor's time" if floor else ""
    if floor and copy_floor_rate:
        ratio += f", {copy_floor_rate[0] / rate:5.2f}x unchained COPY's"
    print(f"{label:46} {rate:10,.0f} records/s{ratio}")
    return rate


def floor_inserts(db: Database, records: int, batch: int) -> None:
    """Plain inserts of the same rows: the database's own cost, no chain."""
    now = time.time()
    for start in range(0, records, batch):
        rows = [
            _row(_event(n), n + 1, now) | {"prev_hash": "0" * 64, "hash": "0" * 64}
            for n in range(start, min(start + batch, records))
        ]
        with db.begin() as conn:
            conn.execute(audit_log.insert(), rows)


def floor_copy(db: Database, records: int, batch: int) -> None:
    """Unchained, but with the writer's own bulk path (COPY): the tighter floor."""
    now = time.time()
    for start in range(0, records, batch):
        rows = [
            _row(_event(n), n + 1, now) | {"prev_hash": "0" * 64, "hash": "0" * 64}
            for n in range(start, min(start + batch, records))
        ]
        with db.begin() as conn:
            insert_rows(db, conn, rows)


def chained_batches(writer: AuditWriter, records: int, batch: int) -> None:
    for start in range(0, records, batch):
        writer.write_batch([_event(n) for n in range(start, min(start + batch, records))])


def group_commit_async(writer: AuditWriter, records: int, callers: int) -> None:
    async def caller(first: int) -> None:
        for n in range(first, records, callers):
            await writer.record(_event(n))

    async def main() -> None:
        await asyncio.gather(*(caller(i) for i in range(callers)))

    writer.start()
    try:
        asyncio.run(main())
    finally:
        writer.stop()


def group_commit_threads(writer: AuditWriter, records: int, threads: int) -> None:
    def worker(first: int) -> None:
        for n in range(first, records, threads):
            writer.record_sync(_event(n))

    writer.start()
    try:
        pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
        for t in pool:
            t.start()
        for t in pool:
            t.join()
    finally:
        writer.stop()


def _count(db: Database) -> int:
    with db.engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(audit_log)).scalar_one())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--callers", type=int, default=2_000)
    parser.add_argument("--threads", type=int, default=64)
    args = parser.parse_args()

    name = f"garrison_bench_{secrets.token_hex(4)}"
    with psycopg.connect(ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    db = Database(ADMIN.rsplit("/", 1)[0] + f"/{name}")
    try:
        migrate.upgrade(db)
        n, b = args.records, args.batch
        print(f"PostgreSQL, {n:,} records; batch {b}; chain on unless noted\n")
        floor = _timed(f"floor: plain inserts, batch {b}", n, lambda: floor_inserts(db, n, b), None)
        _reset(db)
        copy_floor_rate.append(
            _timed(f"unchained COPY, batch {b}", n, lambda: floor_copy(db, n, b), floor)
        )
        _reset(db)
        _timed(
            f"chained write_batch, batch {b}", n, lambda: chained_batches(_writer(db), n, b), floor
        )
        _reset(db)
        _timed(
            f"group commit, {args.callers} async callers",
            n,
            lambda: group_commit_async(_writer(db), n, args.callers),
            floor,
        )
        assert _count(db) == n
        _reset(db)
        writer = _writer(db)
        _timed(
            f"group commit, {args.threads} threads (record_sync)",
            n,
            lambda: group_commit_threads(writer, n, args.threads),
            floor,
        )
        assert _count(db) == n
        from garrison.audit.checkpoint import stored_public_keys
        from garrison.audit.verify import verify_chain

        started = time.perf_counter()
        report = verify_chain(db, stored_public_keys(db), writer.seal)
        rate = report.checked / (time.perf_counter() - started)
        print(f"{'verify (walk and rehash the chain)':46} {rate:10,.0f} records/s   ok={report.ok}")
    finally:
        db.dispose()
        with psycopg.connect(ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
