"""The audit head file outside the database (L7): it follows the writer, and keeps the evidence."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from garrison.audit.chain import ChainKey
from garrison.audit.event import AuditEvent
from garrison.audit.head import AuditSeal, HeadFile
from garrison.audit.verify import verify_chain
from garrison.audit.writer import AuditWriter
from garrison.storage import migrate
from garrison.storage.db import Database

KEY = ChainKey(b"unit-test audit key, 32 bytes..")


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(f"sqlite:///{tmp_path / 'audit.db'}")
    migrate.upgrade(database)
    yield database
    database.dispose()


def _write(writer: AuditWriter, count: int) -> None:
    for n in range(count):
        writer.record_sync(AuditEvent(action="t", outcome="success", actor=str(n)))


def _head(path: Path) -> tuple[int, str]:
    data = json.loads(path.read_text())
    return data["seq"], data["hash"]


@pytest.mark.req("L7")
def test_the_head_follows_every_acknowledged_record(db: Database, tmp_path: Path) -> None:
    path = tmp_path / "head.json"
    writer = AuditWriter(db, AuditSeal(KEY, HeadFile(path, KEY)))
    _write(writer, 3)
    with db.engine.connect() as conn:
        newest = conn.execute(sa.text("SELECT seq, hash FROM audit_log ORDER BY seq DESC")).first()
    assert newest is not None
    assert _head(path) == (3, newest.hash)
    assert path.stat().st_mode & 0o777 == 0o600


@pytest.mark.req("L7")
def test_after_a_cut_the_writer_leaves_the_head_alone(
    db: Database, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "head.json"
    seal = AuditSeal(KEY, HeadFile(path, KEY))
    writer = AuditWriter(db, seal)
    _write(writer, 5)
    before = _head(path)
    with db.engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM audit_log WHERE seq >= 4"))
    _write(writer, 4)  # the log grows back past the old head, with other records
    assert _head(path) == before
    assert "no longer holds record 5" in caplog.text
    report = verify_chain(db, lambda _kid: None, seal)
    assert (report.ok, report.first_bad_seq) == (False, 5)
    assert "history was rewritten" in (report.problem or "")


@pytest.mark.req("L7")
def test_a_forged_or_foreign_head_file_is_refused(db: Database, tmp_path: Path) -> None:
    path = tmp_path / "head.json"
    seal = AuditSeal(KEY, HeadFile(path, KEY))
    _write(AuditWriter(db, seal), 2)
    data = json.loads(path.read_text())
    path.write_text(json.dumps(data | {"seq": 1}))  # moved back by hand, MAC unchanged
    report = verify_chain(db, lambda _kid: None, seal)
    assert not report.ok, report
    assert "does not verify" in (report.problem or "")
    other = ChainKey(b"another deployment's key, 32 b.")
    HeadFile(path, other).reset(2, data["hash"])
    assert not verify_chain(db, lambda _kid: None, seal).ok
    path.write_text("not json")
    assert "not a head record" in (verify_chain(db, lambda _kid: None, seal).problem or "")


@pytest.mark.req("L7")
def test_under_load_the_head_moves_at_most_once_a_second(tmp_path: Path) -> None:
    head = HeadFile(tmp_path / "head.json", KEY)
    assert head.due(idle=False)  # never written yet
    assert head.advance(1, "a" * 64)
    assert not head.due(idle=False)
    assert head.due(idle=True)
    assert not head.advance(1, "a" * 64)  # never backwards, nor in place
    assert head.read() is not None
