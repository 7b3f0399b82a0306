"""The audit chain on SQLite and PostgreSQL (L1, L5, L7): every tampering is caught and named.

Each tampering is done the way an attacker with database access would: plain SQL on the table.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa

from garrison.app import Services
from garrison.audit.checkpoint import stored_public_keys
from garrison.audit.event import AuditEvent
from garrison.audit.head import AuditSeal
from garrison.audit.retention import prune
from garrison.audit.verify import ChainReport, verify_chain
from garrison.audit.writer import AuditWriter
from garrison.errors import ConflictError, ValidationError
from garrison.storage.db import Database
from garrison.storage.schema import audit_checkpoints, audit_log


def _event(n: int, **kw: Any) -> AuditEvent:
    return AuditEvent(
        action="test.event", outcome="success", actor=f"user-{n}", details={"n": n}, **kw
    )


def _fill(svc: Services, count: int = 10) -> None:
    for n in range(1, count + 1):
        svc.audit.record_sync(_event(n, ts=1_000_000.0 + n))


def _verify(svc: Services) -> ChainReport:
    return verify_chain(svc.db, stored_public_keys(svc.db), svc.audit_seal)


def _exec(db: Database, sql: str, **params: Any) -> None:
    with db.engine.begin() as conn:
        conn.execute(sa.text(sql), params)


def _row(db: Database, seq: int) -> dict[str, Any]:
    with db.engine.begin() as conn:
        row = conn.execute(sa.select(audit_log).where(audit_log.c.seq == seq)).one()
    return row._asdict()


@pytest.mark.req("L7")
def test_an_untouched_chain_verifies(backend_services: Services) -> None:
    _fill(backend_services)
    report = _verify(backend_services)
    assert report.ok, report
    assert (report.checked, report.head_seq, report.first_bad_seq) == (10, 10, None)


@pytest.mark.req("L7")
def test_an_edited_record_is_named(backend_services: Services) -> None:
    _fill(backend_services)
    _exec(backend_services.db, "UPDATE audit_log SET outcome = 'failure' WHERE seq = 4")
    report = _verify(backend_services)
    assert not report.ok
    assert report.first_bad_seq == 4
    assert "altered" in (report.problem or "")


@pytest.mark.req("L7")
def test_an_edit_with_a_recomputed_hash_breaks_the_next_link(backend_services: Services) -> None:
    """Even re-hashed with the real key (a host compromise), an edit breaks the next link."""
    record_hash = backend_services.audit_seal.key.record_hash
    _fill(backend_services)
    row = _row(backend_services.db, 4) | {"actor": "someone-else"}
    _exec(
        backend_services.db,
        "UPDATE audit_log SET actor = :a, hash = :h WHERE seq = 4",
        a="someone-else",
        h=record_hash(row, row["prev_hash"]),
    )
    report = _verify(backend_services)
    assert (report.ok, report.first_bad_seq) == (False, 5)


@pytest.mark.req("L7")
def test_a_deleted_record_is_named(backend_services: Services) -> None:
    _fill(backend_services)
    _exec(backend_services.db, "DELETE FROM audit_log WHERE seq = 6")
    report = _verify(backend_services)
    assert (report.ok, report.first_bad_seq) == (False, 6)
    assert "missing" in (report.problem or "")


@pytest.mark.req("L7")
def test_a_deletion_hidden_by_renumbering_is_named(backend_services: Services) -> None:
    _fill(backend_services)
    _exec(backend_services.db, "DELETE FROM audit_log WHERE seq = 6")
    for seq in range(7, 11):
        _exec(backend_services.db, "UPDATE audit_log SET seq = :n WHERE seq = :o", n=seq - 1, o=seq)
    report = _verify(backend_services)
    assert (report.ok, report.first_bad_seq) == (False, 6)


@pytest.mark.req("L7")
def test_an_inserted_record_is_named(backend_services: Services) -> None:
    _fill(backend_services)
    db = backend_services.db
    for seq in range(10, 4, -1):  # make room at 5, from the top down (seq is the primary key)
        _exec(db, "UPDATE audit_log SET seq = :n WHERE seq = :o", n=seq + 1, o=seq)
    forged = _row(db, 4) | {"seq": 5, "action": "admin.user.create", "actor": "attacker"}
    forged |= {"prev_hash": _row(db, 4)["hash"], "hash": "f" * 64}
    with db.engine.begin() as conn:
        conn.execute(audit_log.insert(), [forged])
    report = _verify(backend_services)
    assert (report.ok, report.first_bad_seq) == (False, 5)


@pytest.mark.req("L7")
def test_reordered_records_are_named(backend_services: Services) -> None:
    _fill(backend_services)
    db = backend_services.db
    _exec(db, "UPDATE audit_log SET seq = 1000 WHERE seq = 3")
    _exec(db, "UPDATE audit_log SET seq = 3 WHERE seq = 4")
    _exec(db, "UPDATE audit_log SET seq = 4 WHERE seq = 1000")
    report = _verify(backend_services)
    assert (report.ok, report.first_bad_seq) == (False, 3)
    assert "inserted or reordered" in (report.problem or "")


@pytest.mark.req("L1", "L7")
def test_replicas_writing_at_once_keep_one_linear_chain(
    backend_services: Services, backend_url: str
) -> None:
    """Four writers on four engines (as four replicas would be), batching concurrently."""
    writers = [AuditWriter(Database(backend_url), backend_services.audit_seal) for _ in range(4)]
    per_writer, threads_per_writer = 60, 3

    def hammer(writer: AuditWriter, base: int) -> None:
        for n in range(per_writer // threads_per_writer):
            writer.record_sync(_event(base + n))

    for writer in writers:
        writer.start()
    threads = [
        threading.Thread(target=hammer, args=(w, 1000 * i + 100 * t))
        for i, w in enumerate(writers)
        for t in range(threads_per_writer)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    for writer in writers:
        writer.stop()
        writer.db.dispose()
    report = _verify(backend_services)
    assert report.ok, report
    assert report.checked == 4 * per_writer


@pytest.mark.req("L1")
def test_async_callers_are_released_only_after_their_batch_commits(
    backend_services: Services,
) -> None:
    writer = backend_services.audit
    assert isinstance(writer, AuditWriter)
    commits: list[int] = []
    original = writer.write_batch

    def counting(events: Any) -> Any:
        rows = original(events)
        commits.append(len(events))
        return rows

    writer.write_batch = counting  # type: ignore[method-assign]

    async def many() -> None:
        await asyncio.gather(*(writer.record(_event(n)) for n in range(300)))
        # acknowledged means committed: a fresh connection already sees every record
        with Database(writer.db.url).engine.connect() as conn:
            assert conn.execute(sa.select(sa.func.count()).select_from(audit_log)).scalar() == 300

    writer.start()
    try:
        asyncio.run(many())
    finally:
        writer.stop()
    assert sum(commits) == 300
    assert len(commits) < 300  # grouped: fewer commits than records
    assert _verify(backend_services).ok


@pytest.mark.req("L5", "L7", "V5")
def test_prune_leaves_a_signed_checkpoint_and_a_chain_that_verifies(
    backend_services: Services,
) -> None:
    svc = backend_services
    _fill(svc)
    signer = svc.keyring.current
    keys = stored_public_keys(svc.db)
    result = prune(
        svc.db,
        cutoff=1_000_006.5,
        now=2e6,
        kid=signer.kid,
        sign=signer.sign,
        keys=keys,
        seal=svc.audit_seal,
    )
    assert (result.deleted, result.checkpoint_seq) == (6, 6)
    svc.audit.record_sync(_event(11))
    report = _verify(svc)
    assert report.ok, report
    assert (report.root_seq, report.checked, report.head_seq) == (6, 5, 11)

    # everything pruned: the next record still continues the numbering after the checkpoint
    prune(
        svc.db,
        cutoff=3e9,
        now=3e9,
        kid=signer.kid,
        sign=signer.sign,
        keys=keys,
        seal=svc.audit_seal,
    )
    svc.audit.record_sync(_event(12))
    report = _verify(svc)
    assert report.ok, report
    assert (report.root_seq, report.head_seq) == (11, 12)


@pytest.mark.req("L7")
def test_a_forged_checkpoint_is_refused(backend_services: Services) -> None:
    svc = backend_services
    _fill(svc)
    signer = svc.keyring.current
    prune(
        svc.db,
        cutoff=1_000_004.5,
        now=2e6,
        kid=signer.kid,
        sign=signer.sign,
        keys=stored_public_keys(svc.db),
        seal=svc.audit_seal,
    )
    # an attacker deletes more and moves the checkpoint forward: they cannot re-sign it
    _exec(svc.db, "DELETE FROM audit_log WHERE seq <= 7")
    with svc.db.engine.begin() as conn:
        conn.execute(sa.update(audit_checkpoints).values(seq=7, hash=_row(svc.db, 8)["prev_hash"]))
    report = _verify(svc)
    assert not report.ok
    assert "signature" in (report.problem or "")


@pytest.mark.req("L5", "L7")
def test_prune_refuses_to_launder_a_tampered_record(backend_services: Services) -> None:
    svc = backend_services
    _fill(svc)
    _exec(svc.db, "UPDATE audit_log SET actor = 'nobody' WHERE seq = 2")
    signer = svc.keyring.current
    with pytest.raises(ConflictError):
        prune(
            svc.db,
            cutoff=1_000_005.5,
            now=2e6,
            kid=signer.kid,
            sign=signer.sign,
            keys=stored_public_keys(svc.db),
            seal=svc.audit_seal,
        )
    with svc.db.engine.begin() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(audit_log)).scalar() == 10


@pytest.mark.req("L1", "L3")
def test_odd_input_is_stored_and_still_verifies(backend_services: Services) -> None:
    """NUL bytes, over-long fields, non-JSON values: cleaned, never a failed batch."""
    backend_services.audit.record_sync(
        AuditEvent(
            action="odd\x00action",
            outcome="failure",
            actor="a" * 1000,
            user_agent="ua\x00" * 300,
            details={"k\x00": ["v\x00", 1.5, None], "when": object(), "\\u0000": "\\u0000"},
        )
    )
    _fill(backend_services, 2)
    report = _verify(backend_services)
    assert report.ok, report
    row = _row(backend_services.db, 1)
    assert row["action"] == "oddaction"
    assert row["details"]["k"] == ["v", 1.5, None]
    assert row["details"]["\\u0000"] == "\\u0000"


@pytest.mark.req("L7")
def test_an_anchor_catches_a_log_cut_short_or_rewritten(backend_services: Services) -> None:
    """A hand-kept anchor (``--anchor``) on its own, without the head file's help."""
    svc = backend_services
    record_hash = svc.audit_seal.key.record_hash
    headless = AuditSeal(svc.audit_seal.key)  # e.g. verifying from another host
    _fill(svc)
    head = _verify(svc)
    anchor = (head.head_seq, head.head_hash)
    keys = stored_public_keys(svc.db)
    assert verify_chain(svc.db, keys, headless, anchor=anchor).ok
    svc.audit.record_sync(_event(11))  # the log grows: the anchor still holds
    assert verify_chain(svc.db, keys, headless, anchor=anchor).ok

    _exec(svc.db, "DELETE FROM audit_log WHERE seq >= 9")  # cut the tail: the chain alone is fine
    assert verify_chain(svc.db, keys, headless).ok
    cut = verify_chain(svc.db, keys, headless, anchor=anchor)
    assert (cut.ok, cut.first_bad_seq) == (False, 9)
    assert "cut short" in (cut.problem or "")

    # rewrite record 8 and re-chain it (with the key: a host compromise): whole again, but no
    # longer the anchored history
    row = _row(svc.db, 8) | {"actor": "rewritten"}
    _exec(
        svc.db,
        "UPDATE audit_log SET actor = 'rewritten', hash = :h WHERE seq = 8",
        h=record_hash(row, row["prev_hash"]),
    )
    svc.audit.record_sync(_event(12))
    svc.audit.record_sync(_event(13))
    assert verify_chain(svc.db, keys, headless).ok
    redone = verify_chain(svc.db, keys, headless, anchor=anchor)
    assert (redone.ok, redone.first_bad_seq) == (False, 10)


@pytest.mark.req("L4", "E7")
@pytest.mark.parametrize("field", ["action", "actor", "tenant"])
def test_audit_filters_refuse_nul_and_oversized_text_on_both_databases(
    backend_services: Services, field: str
) -> None:
    from garrison.audit.query import AuditFilter, search

    build: Callable[[str], AuditFilter] = {
        "action": lambda v: AuditFilter(action=v),
        "actor": lambda v: AuditFilter(actor=v),
        "tenant": lambda v: AuditFilter(tenant=v),
    }[field]
    for bad in ("a\x00b", "x" * 401):
        with pytest.raises(ValidationError, match=field):
            search(backend_services.db, build(bad))
    assert search(backend_services.db, build("ok")) == []


def _unkeyed_hash(row: dict[str, Any], prev: str) -> str:
    """What an attacker with only the database can compute: SHA-256 over the hashed fields."""
    from garrison.audit.chain import HASHED_FIELDS, canonical

    body = {name: row[name] for name in HASHED_FIELDS} | {"ts": repr(float(row["ts"]))}
    return hashlib.sha256(prev.encode() + b"\n" + canonical(body)).hexdigest()


@pytest.mark.req("L7")
def test_a_rewrite_rechained_without_the_key_is_caught(backend_services: Services) -> None:
    """Edit record 4, then re-link and re-hash every record after it: the chain is keyed."""
    svc = backend_services
    _fill(svc)
    prev = _row(svc.db, 3)["hash"]
    for seq in range(4, 11):
        row = _row(svc.db, seq) | {"actor": "attacker", "prev_hash": prev}
        prev = _unkeyed_hash(row, prev)
        _exec(
            svc.db,
            "UPDATE audit_log SET actor = 'attacker', prev_hash = :p, hash = :h WHERE seq = :s",
            p=row["prev_hash"],
            h=prev,
            s=seq,
        )
    report = _verify(svc)
    assert (report.ok, report.first_bad_seq) == (False, 4), report
    assert "altered" in (report.problem or "")


@pytest.mark.req("L7")
def test_a_cut_tail_is_caught_without_a_hand_kept_anchor(backend_services: Services) -> None:
    svc = backend_services
    _fill(svc)
    _exec(svc.db, "DELETE FROM audit_log WHERE seq >= 9")
    report = _verify(svc)
    assert (report.ok, report.first_bad_seq) == (False, 9), report
    assert "cut short" in (report.problem or "")
    _exec(svc.db, "DELETE FROM audit_log")  # everything gone: still caught
    assert (_verify(svc).ok, _verify(svc).first_bad_seq) == (False, 1)
