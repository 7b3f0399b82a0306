"""Append audit records to the database (and ``AUDIT_LOG_PATH``), chained, one writer at a time.

Replicas serialise on a PostgreSQL advisory lock (SQLite: its write lock), so the chain stays linear
however many processes write. ``record`` returns only after the transaction commits.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio.to_thread
import sqlalchemy as sa

from garrison.audit.chain import GENESIS, record_hash
from garrison.audit.event import AuditEvent
from garrison.audit.redact import redact
from garrison.clock import Clock, system_clock
from garrison.storage.db import Database
from garrison.storage.schema import audit_log

_ADVISORY_KEY = 0x6761727269736F6E  # "garrison"


class AuditWriter:
    def __init__(
        self, db: Database, *, clock: Clock = system_clock, log_path: Path | None = None
    ) -> None:
        self.db = db
        self.clock = clock
        self.log_path = log_path
        self._lock = threading.Lock()

    async def record(self, event: AuditEvent) -> None:
        await anyio.to_thread.run_sync(self.record_sync, event)

    def record_sync(self, event: AuditEvent) -> None:
        self.write_batch([event])

    def write_batch(self, events: Sequence[AuditEvent]) -> list[dict[str, Any]]:
        """Chain and commit ``events`` in one transaction; returns the rows written."""
        with self._lock, self.db.begin(immediate=True) as conn:
            if self.db.is_postgres:
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _ADVISORY_KEY})
            last = conn.execute(
                sa.select(audit_log.c.seq, audit_log.c.hash)
                .order_by(audit_log.c.seq.desc())
                .limit(1)
            ).first()
            seq, prev = (last.seq, last.hash) if last else (0, _root_hash(conn))
            rows = []
            for event in events:
                seq += 1
                row = _row(event, seq, self.clock())
                row["prev_hash"] = prev
                row["hash"] = prev = record_hash(row, prev)
                rows.append(row)
            conn.execute(audit_log.insert(), rows)
        if self.log_path is not None:
            self._append_jsonl(rows)
        return rows

    def _append_jsonl(self, rows: Sequence[dict[str, Any]]) -> None:
        assert self.log_path is not None
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        data = "".join(json.dumps(row, sort_keys=True) + "\n" for row in rows).encode()
        fd = os.open(self.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)


def _row(event: AuditEvent, seq: int, now: float) -> dict[str, Any]:
    return {
        "seq": seq,
        "ts": event.ts if event.ts is not None else now,
        "action": event.action,
        "actor": event.actor,
        "tenant": event.tenant,
        "ip": event.ip,
        "user_agent": (event.user_agent or None) and event.user_agent[:400],
        "outcome": event.outcome,
        "reason": (event.reason or None) and event.reason[:400],
        "request_id": event.request_id,
        "details": redact(dict(event.details)),
    }


def _root_hash(conn: sa.Connection) -> str:
    """Where the chain starts: genesis, or the newest retention checkpoint's hash."""
    from garrison.storage.schema import audit_checkpoints

    row = conn.execute(
        sa.select(audit_checkpoints.c.hash).order_by(audit_checkpoints.c.id.desc()).limit(1)
    ).first()
    return str(row.hash) if row else GENESIS
