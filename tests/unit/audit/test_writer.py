"""The batching writer (L1, L3, C6): what a record holds, and that a failure reaches its caller."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from garrison.audit.chain import GENESIS, ChainKey
from garrison.audit.event import AuditEvent
from garrison.audit.head import AuditSeal
from garrison.audit.writer import AuditWriter
from garrison.storage import migrate
from garrison.storage.db import Database
from garrison.storage.schema import audit_log

SEAL = AuditSeal(ChainKey(b"unit-test audit key, 32 bytes.."))


@pytest.fixture
def db(tmp_path: Path) -> Any:
    database = Database(f"sqlite:///{tmp_path / 'audit.db'}")
    migrate.upgrade(database)
    yield database
    database.dispose()


def _rows(db: Database) -> list[dict[str, Any]]:
    with db.engine.connect() as conn:
        return [r._asdict() for r in conn.execute(sa.select(audit_log).order_by(audit_log.c.seq))]


@pytest.mark.req("L3")
def test_a_record_carries_every_field_and_links_to_genesis(db: Database) -> None:
    writer = AuditWriter(db, SEAL, clock=lambda: 1234.5)
    writer.record_sync(
        AuditEvent(
            action="auth.login",
            outcome="failure",
            actor="alice",
            tenant="acme",
            ip="10.0.0.1",
            user_agent="curl/8",
            reason="bad password",
            request_id="req-1",
            details={"username": "alice"},
        )
    )
    (row,) = _rows(db)
    assert row["ts"] == 1234.5
    assert (row["action"], row["outcome"], row["actor"], row["tenant"]) == (
        "auth.login",
        "failure",
        "alice",
        "acme",
    )
    assert (row["ip"], row["user_agent"], row["reason"], row["request_id"]) == (
        "10.0.0.1",
        "curl/8",
        "bad password",
        "req-1",
    )
    assert row["details"] == {"username": "alice"}
    assert row["prev_hash"] == GENESIS
    assert row["hash"] == SEAL.key.record_hash(row, GENESIS)


@pytest.mark.req("C6", "L3")
def test_secrets_in_details_and_reason_are_redacted_and_long_fields_cut(db: Database) -> None:
    writer = AuditWriter(db, SEAL)
    writer.record_sync(
        AuditEvent(
            action="x" * 300,
            outcome="success",
            actor="a" * 500,
            reason="header was Bearer eyJhbGciOi.eyJzdWIiOiJ4In0.c2ln",
            details={"password": "hunter2hunter2", "nested": {"api_key": "gk_abc"}, "n": 1},
        )
    )
    (row,) = _rows(db)
    assert len(row["action"]) == 100
    assert len(row["actor"]) == 200
    assert "eyJ" not in row["reason"]
    assert row["details"] == {
        "password": "[redacted]",
        "nested": {"api_key": "[redacted]"},
        "n": 1,
    }


@pytest.mark.req("L1")
def test_the_json_lines_copy_matches_the_database(db: Database, tmp_path: Path) -> None:
    path = tmp_path / "logs" / "audit.jsonl"
    writer = AuditWriter(db, SEAL, log_path=path)
    writer.start()
    try:
        for n in range(3):
            writer.record_sync(AuditEvent(action="t", outcome="success", details={"n": n}))
    finally:
        writer.stop()
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line["hash"] for line in lines] == [r["hash"] for r in _rows(db)]
    assert oct(path.stat().st_mode & 0o777) == "0o600"


@pytest.mark.req("L1")
def test_a_failed_commit_reaches_every_waiting_caller(db: Database) -> None:
    writer = AuditWriter(db, SEAL)

    def broken(_events: Any) -> Any:
        raise RuntimeError("database down")

    writer.write_batch = broken  # type: ignore[method-assign, assignment]
    writer.start()
    errors: list[BaseException] = []

    def call() -> None:
        try:
            writer.record_sync(AuditEvent(action="t", outcome="success"))
        except RuntimeError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=call) for _ in range(5)]
    for t in threads:
        t.start()

    async def one() -> None:
        with pytest.raises(RuntimeError):
            await writer.record(AuditEvent(action="t", outcome="success"))

    asyncio.run(one())
    for t in threads:
        t.join(10)
    writer.stop()
    assert len(errors) == 5


@pytest.mark.req("L1", "L6")
def test_backlog_and_written_hooks_report(db: Database) -> None:
    seen: list[int] = []
    written: list[str] = []
    writer = AuditWriter(
        db, SEAL, on_backlog=seen.append, on_written=lambda e: written.append(e.action)
    )
    writer.start()
    writer.record_sync(AuditEvent(action="admin.user.create", outcome="success"))
    writer.stop()
    assert seen[0] == 1
    assert seen[-1] == 0
    assert written == ["admin.user.create"]


@pytest.mark.req("L1")
def test_stop_commits_what_was_already_handed_over(db: Database) -> None:
    writer = AuditWriter(db, SEAL)
    writer.start()

    async def burst() -> None:
        tasks = [asyncio.ensure_future(writer.record(AuditEvent(action="t", outcome="success")))]
        tasks += [
            asyncio.ensure_future(writer.record(AuditEvent(action="t", outcome="success")))
            for _ in range(49)
        ]
        await asyncio.sleep(0)  # every record handed over
        await asyncio.to_thread(writer.stop)
        await asyncio.gather(*tasks)

    asyncio.run(burst())
    assert len(_rows(db)) == 50
    assert not writer.running
