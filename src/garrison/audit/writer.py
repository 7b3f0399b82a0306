"""Append audit records to the database (and ``AUDIT_LOG_PATH``), chained, with group commit.

Why a batching writer: one transaction per record costs a lock round trip and a commit (an fsync)
each, which caps the log at a few hundred records/s. Here callers hand their record to one writer
thread and wait; while a batch commits, the next one gathers, so under load each commit carries many
records, and a caller is released only once the batch holding its record has committed (L1: an
acknowledged record survives ``kill -9``).

Replicas serialise on a PostgreSQL advisory lock (SQLite: ``BEGIN IMMEDIATE``), and each batch reads
the chain's head inside that lock, so the chain stays linear however many processes write (L7).
Hashes are HMACs under the audit key (``garrison.audit.chain``), and after a commit the writer
moves the head file outside the database (``garrison.audit.head``): at once when it has nothing
more queued, at most once a second under load, and only after checking, inside the batch's
transaction, that the head it replaces is still in the log.

Before ``start`` (CLI commands, scripts) and after ``stop``, records are written directly by the
calling thread: same durability, no batching.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import KW_ONLY, dataclass, field
from pathlib import Path
from typing import Any

import anyio.to_thread
import sqlalchemy as sa

from garrison.audit.chain import GENESIS
from garrison.audit.event import AuditEvent
from garrison.audit.head import AuditSeal, HeadFileError
from garrison.audit.redact import redact, redact_text
from garrison.clock import Clock, system_clock
from garrison.storage.db import Database
from garrison.storage.files import open_private, private_dir
from garrison.storage.schema import audit_checkpoints, audit_log

log = logging.getLogger("garrison.audit")

_ADVISORY_KEY = 0x6761727269736F6E  # "garrison"
#: Column widths: a longer value is cut before hashing, so one odd record never fails a batch.
_LIMITS = {"action": 100, "actor": 200, "tenant": 100, "ip": 64, "user_agent": 400, "reason": 400}
_LIMITS |= {"request_id": 64, "outcome": 16}

_COPY_COLUMNS = tuple(c.name for c in audit_log.columns)
_COPY = f"COPY audit_log ({', '.join(_COPY_COLUMNS)}) FROM STDIN"

Backlog = Callable[[int], None]


@dataclass(slots=True)
class _Pending:
    """One record handed over: its waiter is an asyncio future (on ``loop``) or a thread's event."""

    event: AuditEvent
    future: asyncio.Future[None] | None = None
    loop: asyncio.AbstractEventLoop | None = None
    waiter: _SyncWaiter | None = None


@dataclass(slots=True)
class _SyncWaiter:
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None

    def settle(self, error: BaseException | None) -> None:
        self.error = error
        self.done.set()


_STOP = object()


@dataclass(eq=False, repr=False)
class AuditWriter:
    """The ``AuditSink`` of the service: chained, batched, durable before it acknowledges."""

    db: Database
    seal: AuditSeal
    _: KW_ONLY
    clock: Clock = system_clock
    log_path: Path | None = None
    max_batch: int = 2000
    on_backlog: Backlog | None = None
    on_written: Callable[[AuditEvent], None] | None = None  # e.g. metrics derived from the trail
    #: one chain transaction at a time in this process
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)
    _queue: queue.SimpleQueue[_Pending | object] = field(
        default_factory=queue.SimpleQueue, init=False
    )
    _thread: threading.Thread | None = field(default=None, init=False)
    #: start/stop against hand-over: nothing is stranded
    _state: threading.Lock = field(default_factory=threading.Lock, init=False)
    _backlog: int = field(default=0, init=False)
    _backlog_lock: threading.Lock = field(default_factory=threading.Lock, init=False)
    _head_warned: bool = field(default=False, init=False)

    # -- lifecycle -----------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._thread is not None

    def start(self) -> None:
        """Start the group-commit thread (the service's lifespan calls this)."""
        with self._state:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="audit-writer", daemon=True)
                self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Commit everything already handed over, then stop the thread.

        Records handed over before this call are queued ahead of the stop marker, so they commit;
        callers arriving after it find the writer stopped and write directly.
        """
        with self._state:
            thread, self._thread = self._thread, None
            if thread is not None:
                self._queue.put(_STOP)
        if thread is not None:
            thread.join(timeout)

    # -- the sink ------------------------------------------------------------------------------
    async def record(self, event: AuditEvent) -> None:
        if not self.running:
            await anyio.to_thread.run_sync(self.record_sync, event)
            return
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        if not self._submit(_Pending(event, future=future, loop=loop)):
            await anyio.to_thread.run_sync(self.write_batch, [event])
            return
        await asyncio.shield(future)  # a cancelled caller must not un-acknowledge its batch

    def record_sync(self, event: AuditEvent) -> None:
        waiter = _SyncWaiter()
        if not self._submit(_Pending(event, waiter=waiter)):
            self.write_batch([event])
            return
        waiter.done.wait()
        if waiter.error is not None:
            raise waiter.error

    def _submit(self, pending: _Pending) -> bool:
        """Queue ``pending`` for the writer thread; False when it is not running."""
        with self._state:
            if self._thread is None:
                return False
            self._count(+1)
            self._queue.put(pending)
            return True

    def _count(self, delta: int) -> None:
        with self._backlog_lock:
            self._backlog += delta
            backlog = self._backlog
        if self.on_backlog is not None:
            try:
                self.on_backlog(backlog)
            except Exception:  # a gauge must never strand a caller
                log.exception("audit on_backlog hook failed")

    # -- the writer thread ---------------------------------------------------------------------
    def _run(self) -> None:
        stopping = False
        while not stopping:
            batch, stopping = self._gather()
            if batch:
                self._commit(batch)

    def _gather(self) -> tuple[list[_Pending], bool]:
        """Block for one record, then take whatever else is already waiting (the group)."""
        first = self._queue.get()
        if first is _STOP:
            return self._drain_rest(), True
        assert isinstance(first, _Pending)
        batch = [first]
        while len(batch) < self.max_batch:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is _STOP:
                return batch + self._drain_rest(), True
            assert isinstance(item, _Pending)
            batch.append(item)
        return batch, False

    def _drain_rest(self) -> list[_Pending]:
        rest: list[_Pending] = []
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return rest
            if isinstance(item, _Pending):
                rest.append(item)

    def _commit(self, batch: Sequence[_Pending]) -> None:
        try:
            self.write_batch([p.event for p in batch])
        except Exception as exc:
            if len(batch) > 1:  # one unwritable record must not fail its neighbours
                for pending in batch:
                    self._commit([pending])
                return
            log.error("audit record not written: %s", type(exc).__name__)
            self._settle(batch, exc)
        else:
            self._settle(batch, None)

    def _settle(self, batch: Sequence[_Pending], error: BaseException | None) -> None:
        """Release every caller of ``batch``: one wake-up per event loop, not one per record."""
        self._count(-len(batch))
        by_loop: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
        for pending in batch:
            if pending.waiter is not None:
                pending.waiter.settle(error)
            elif pending.loop is not None and pending.future is not None:
                by_loop.setdefault(pending.loop, []).append(pending.future)
        for loop, futures in by_loop.items():
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
                loop.call_soon_threadsafe(_resolve, futures, error)

    # -- one chained transaction ---------------------------------------------------------------
    def write_batch(self, events: Sequence[AuditEvent]) -> list[dict[str, Any]]:
        """Chain and commit ``events`` in one transaction; returns the rows written.

        The head file moves now when nothing else is queued, else at most once a second.
        """
        now = self.clock()
        head = self.seal.head
        move_head = head is not None and head.due(idle=self._queue.empty())
        record_hash = self.seal.key.record_hash
        with self._lock, self.db.begin(immediate=True) as conn:
            lock_chain(self.db, conn)
            seq, prev = chain_head(conn)
            if move_head:
                move_head = self._head_still_holds(conn, seq, prev)
            rows = []
            for event in events:
                seq += 1
                row = _row(event, seq, now)
                row["prev_hash"] = prev
                row["hash"] = prev = record_hash(row, prev)
                rows.append(row)
            insert_rows(self.db, conn, rows)
        if move_head and head is not None and rows:
            try:
                head.advance(seq, prev)
            except OSError as exc:
                log.error("audit head file %s not written: %s", head.path, exc.strerror)
        if self.log_path is not None:
            self._append_jsonl(rows)
        self._notify(events)
        return rows

    def _head_still_holds(self, conn: sa.Connection, seq: int, hash_: str) -> bool:
        """Whether the log still has the head file's record (checked before replacing it).

        ``(seq, hash_)`` is the chain's head, just read: usually the file's record itself (this
        writer put it there), which needs no query. When the log lacks it, the log was cut or
        rewritten under us: leave the file as the evidence.
        """
        assert self.seal.head is not None
        try:
            head = self.seal.head.read()
        except HeadFileError as exc:
            return self._head_broken(str(exc))
        if head is None or (head.seq, head.hash) == (seq, hash_):
            return True
        found = conn.execute(sa.select(audit_log.c.hash).where(audit_log.c.seq == head.seq))
        if found.scalar() == head.hash or head.seq <= chain_root(conn)[0]:
            return True  # still there, or pruned since (the signed checkpoint vouches for it)
        return self._head_broken(
            f"the audit log no longer holds record {head.seq} of the head file "
            f"{self.seal.head.path}: cut short or rewritten; run `garrison audit verify`"
        )

    def _head_broken(self, problem: str) -> bool:
        if not self._head_warned:
            self._head_warned = True
            log.error("audit head not moved: %s", problem)
        return False

    def _notify(self, events: Sequence[AuditEvent]) -> None:
        """Tell ``on_written``; after the commit, so a failing hook can never re-write a batch."""
        if self.on_written is None:
            return
        try:
            for event in events:
                self.on_written(event)
        except Exception:
            log.exception("audit on_written hook failed")

    def _append_jsonl(self, rows: Sequence[dict[str, Any]]) -> None:
        """The JSON-lines copy (L1); the database stays the record of truth if this fails."""
        assert self.log_path is not None
        data = "".join(json.dumps(row, sort_keys=True) + "\n" for row in rows).encode()
        try:
            private_dir(self.log_path.parent)
            fd = open_private(self.log_path, os.O_WRONLY | os.O_APPEND)
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            log.error("AUDIT_LOG_PATH not written: %s", exc.strerror)


def _resolve(futures: Sequence[asyncio.Future[None]], error: BaseException | None) -> None:
    for future in futures:
        if future.done():
            continue
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)


def insert_rows(db: Database, conn: sa.Connection, rows: Sequence[dict[str, Any]]) -> None:
    """Insert a batch; on PostgreSQL with ``COPY`` (one round trip, several times faster)."""
    if not db.is_postgres:
        conn.execute(audit_log.insert(), rows)
        return
    raw: Any = conn.connection.driver_connection  # psycopg 3, inside this transaction
    with raw.cursor() as cursor, cursor.copy(_COPY) as copy:
        for row in rows:
            copy.write_row(
                [json.dumps(row["details"]) if n == "details" else row[n] for n in _COPY_COLUMNS]
            )


def lock_chain(db: Database, conn: sa.Connection) -> None:
    """Serialise chain writers across processes (SQLite: the ``BEGIN IMMEDIATE`` already did)."""
    if db.is_postgres:
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _ADVISORY_KEY})


def chain_head(conn: sa.Connection) -> tuple[int, str]:
    """The newest record's ``(seq, hash)``; with no record, the newest checkpoint's, or genesis."""
    last = conn.execute(
        sa.select(audit_log.c.seq, audit_log.c.hash).order_by(audit_log.c.seq.desc()).limit(1)
    ).first()
    if last is not None:
        return int(last.seq), str(last.hash)
    return chain_root(conn)


def chain_root(conn: sa.Connection) -> tuple[int, str]:
    """Where the chain starts: genesis, or the newest retention checkpoint."""
    row = conn.execute(
        sa.select(audit_checkpoints.c.seq, audit_checkpoints.c.hash)
        .order_by(audit_checkpoints.c.id.desc())
        .limit(1)
    ).first()
    return (int(row.seq), str(row.hash)) if row else (0, GENESIS)


def _clean(name: str, value: str | None) -> str | None:
    if not value:
        return None
    text = value.replace("\x00", "")[: _LIMITS[name]]
    return redact_text(text) if name in ("reason", "user_agent") else text


def _details(event: AuditEvent) -> Any:
    """Redacted, and made plain JSON, so the hash covers exactly what the database returns."""
    return _without_nul(json.loads(json.dumps(redact(dict(event.details)), default=str)))


def _without_nul(value: Any) -> Any:
    """PostgreSQL text cannot hold NUL; drop it everywhere so one odd value never fails a batch."""
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, dict):
        return {_without_nul(k): _without_nul(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_nul(v) for v in value]
    return value


def _row(event: AuditEvent, seq: int, now: float) -> dict[str, Any]:
    return {
        "seq": seq,
        "ts": float(event.ts if event.ts is not None else now),
        "action": _clean("action", event.action) or "unknown",
        "actor": _clean("actor", event.actor),
        "tenant": _clean("tenant", event.tenant),
        "ip": _clean("ip", event.ip),
        "user_agent": _clean("user_agent", event.user_agent),
        "outcome": _clean("outcome", event.outcome) or "error",
        "reason": _clean("reason", event.reason),
        "request_id": _clean("request_id", event.request_id),
        "details": _details(event),
    }
