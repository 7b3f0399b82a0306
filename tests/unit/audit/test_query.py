"""Filters, the ready-made queries (L4), time parsing and export (L5)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest

from garrison.audit import query as q
from garrison.audit.chain import ChainKey
from garrison.audit.event import AuditEvent
from garrison.audit.head import AuditSeal
from garrison.audit.writer import AuditWriter
from garrison.errors import ValidationError
from garrison.storage import migrate
from garrison.storage.db import Database

NOW = 2_000_000_000.0


@pytest.fixture
def db(tmp_path: Path) -> Any:
    database = Database(f"sqlite:///{tmp_path / 'audit.db'}")
    migrate.upgrade(database)
    writer = AuditWriter(database, AuditSeal(ChainKey(b"unit-test audit key, 32 bytes..")))
    events = [
        AuditEvent("auth.login", "failure", actor="bob", reason="bad password", ts=NOW - 3600),
        AuditEvent("auth.login", "deny", actor="bob", reason="throttled", ts=NOW - 1800),
        AuditEvent("auth.login", "failure", actor="old", ts=NOW - 3 * 86400),
        AuditEvent("auth.login", "success", actor="alice", tenant="acme", ts=NOW - 60),
        AuditEvent("admin.user.create", "success", actor="alice", tenant="acme", ts=NOW - 50),
        AuditEvent("admin.keys.rotate", "success", actor="root", ts=NOW - 40),
        AuditEvent("admin_like.thing", "success", actor="root", ts=NOW - 30),
    ]
    for event in events:
        writer.record_sync(event)
    yield database
    database.dispose()


def _actions(records: list[dict[str, Any]]) -> list[tuple[str, str | None]]:
    return [(r["action"], r["actor"]) for r in records]


@pytest.mark.req("L4")
def test_preset_admin_actions_is_newest_first_and_only_admin(db: Database) -> None:
    found = q.search(db, q.preset("admin-actions", NOW))
    assert _actions(found) == [("admin.keys.rotate", "root"), ("admin.user.create", "alice")]


@pytest.mark.req("L4")
def test_preset_failed_logins_covers_the_last_24_hours(db: Database) -> None:
    found = q.search(db, q.preset("failed-logins", NOW))
    assert [(r["actor"], r["outcome"]) for r in found] == [("bob", "deny"), ("bob", "failure")]


@pytest.mark.req("L4")
def test_preset_actor_is_everything_one_actor_did(db: Database) -> None:
    found = q.search(db, q.preset("actor", NOW, actor="alice"))
    assert _actions(found) == [("admin.user.create", "alice"), ("auth.login", "alice")]
    with pytest.raises(ValidationError):
        q.preset("actor", NOW)
    with pytest.raises(ValidationError):
        q.preset("everything", NOW)


@pytest.mark.req("L4")
def test_filters_combine(db: Database) -> None:
    f = q.AuditFilter(action="auth.login", outcome="failure", since=NOW - 86400, until=NOW)
    assert _actions(q.search(db, f)) == [("auth.login", "bob")]
    assert len(q.search(db, q.AuditFilter(tenant="acme"))) == 2
    assert len(q.search(db, q.AuditFilter(limit=3))) == 3
    assert q.count(db, q.AuditFilter(action="auth.")) == 4


@pytest.mark.req("E7")
def test_bad_filters_are_refused_clearly() -> None:
    with pytest.raises(ValidationError):
        q.AuditFilter(outcome="maybe")
    with pytest.raises(ValidationError):
        q.AuditFilter(limit=0)
    with pytest.raises(ValidationError):
        q.parse_time("yesterday-ish", NOW)
    with pytest.raises(ValidationError):
        q.parse_age("0d")


@pytest.mark.req("L4")
def test_times_parse_relative_iso_and_unix() -> None:
    assert q.parse_time("24h", NOW) == NOW - 86400
    assert q.parse_time("2026-01-31T00:00:00Z", NOW) == 1769817600.0
    assert q.parse_time("2026-01-31T00:00:00", NOW) == 1769817600.0
    assert q.parse_time("1700000000", NOW) == 1700000000.0
    assert q.parse_age("90d") == 90 * 86400


@pytest.mark.req("L5")
def test_export_json_lines_and_csv_hold_every_record_oldest_first(db: Database) -> None:
    seen: list[int] = []
    out = io.StringIO()
    assert q.export(db, q.AuditFilter(), out, "jsonl", seen.append) == 7
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [r["seq"] for r in lines] == list(range(1, 8))
    assert seen[-1] == 7
    assert set(lines[0]) == set(q.COLUMNS)

    out = io.StringIO()
    q.export(db, q.AuditFilter(actor="bob"), out, "csv")
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert [r["reason"] for r in rows] == ["bad password", "throttled"]
    assert json.loads(rows[0]["details"]) == {}
