"""An audit log from before the keyed chain keeps verifying, and cannot be downgraded (L7, O2).

Each database starts at revision 0002 with records hashed the old way (plain SHA-256); the service
then upgrades it (revision 0003 plus the keyed-start marker) and goes on writing keyed records.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from garrison.app import Services, build_services
from garrison.audit.chain import GENESIS, legacy_hash
from garrison.audit.checkpoint import stored_public_keys
from garrison.audit.event import AuditEvent
from garrison.audit.head import AuditSeal
from garrison.audit.retention import prune
from garrison.audit.verify import ChainReport, verify_chain
from garrison.storage import migrate
from garrison.storage.db import Database
from garrison.storage.schema import audit_epochs, audit_log
from tests.conftest import MakeSettings
from tests.support import create_pg_database, drop_pg_database

LEGACY = 5  # records 1..5 unkeyed; 6.. keyed


def _at_revision_0002(url: str) -> None:
    db = Database(url)
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(migrate.__file__).parent / "migrations"))
    with db.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0002")
    prev, rows = GENESIS, []
    for seq in range(1, LEGACY + 1):
        row: dict[str, Any] = {
            "seq": seq,
            "ts": 1_000_000.0 + seq,
            "action": "old.event",
            "actor": f"user-{seq}",
            "tenant": None,
            "ip": None,
            "user_agent": None,
            "outcome": "success",
            "reason": None,
            "request_id": None,
            "details": {"n": seq},
            "prev_hash": prev,
        }
        row["hash"] = prev = legacy_hash(row, prev)
        rows.append(row)
    with db.engine.begin() as conn:
        conn.execute(audit_log.insert(), rows)
    db.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def legacy(
    request: pytest.FixtureRequest, tmp_path: Path, make_settings: MakeSettings
) -> Iterator[Services]:
    url = (
        f"sqlite:///{tmp_path / 'legacy.db'}"
        if request.param == "sqlite"
        else create_pg_database("garrison_keying")
    )
    try:
        _at_revision_0002(url)
        svc = build_services(make_settings(DATABASE_URL=url))  # development: upgrades, marks
        svc.keyring.load()
        for n in range(3):
            svc.audit.record_sync(AuditEvent(action="new.event", outcome="success", actor=str(n)))
        yield svc
        svc.close()
    finally:
        if request.param == "postgres":
            drop_pg_database(url)


def _verify(svc: Services, seal: AuditSeal | None = None) -> ChainReport:
    return verify_chain(svc.db, stored_public_keys(svc.db), seal or svc.audit_seal)


def _exec(svc: Services, sql: str, **params: Any) -> None:
    with svc.db.engine.begin() as conn:
        conn.execute(sa.text(sql), params)


def _rechain_unkeyed(svc: Services, first: int, last: int) -> None:
    """Edit ``first`` and re-hash it and every record up to ``last`` the old (unkeyed) way."""
    with svc.db.engine.begin() as conn:
        prev = conn.execute(
            sa.select(audit_log.c.hash).where(audit_log.c.seq == first - 1)
        ).scalar_one()
        for seq in range(first, last + 1):
            row = conn.execute(sa.select(audit_log).where(audit_log.c.seq == seq)).one()._asdict()
            row |= {"actor": "attacker", "prev_hash": prev}
            prev = legacy_hash(row, prev)
            conn.execute(
                sa.update(audit_log)
                .where(audit_log.c.seq == seq)
                .values(actor="attacker", prev_hash=row["prev_hash"], hash=prev)
            )


@pytest.mark.req("L7", "O2")
def test_old_records_keep_verifying_after_the_switch(legacy: Services) -> None:
    report = _verify(legacy)
    assert report.ok, report
    assert (report.checked, report.head_seq, report.anchored_seq) == (LEGACY + 3, LEGACY + 3, 8)
    with legacy.db.engine.connect() as conn:
        (marker,) = conn.execute(sa.select(audit_epochs)).all()
        top = conn.execute(sa.select(audit_log).where(audit_log.c.seq == LEGACY + 1)).one()
    assert marker.first_seq == LEGACY + 1
    assert top.hash != legacy_hash(top._asdict(), top.prev_hash)  # the new records are keyed


@pytest.mark.req("L7")
def test_the_old_part_rewritten_and_rehashed_the_old_way_is_caught(legacy: Services) -> None:
    _rechain_unkeyed(legacy, 3, LEGACY)
    report = _verify(legacy)
    assert (report.ok, report.first_bad_seq) == (False, LEGACY), report
    assert "keyed chain started from" in (report.problem or "")


@pytest.mark.req("L7")
def test_a_keyed_record_rehashed_the_old_way_is_caught(legacy: Services) -> None:
    _rechain_unkeyed(legacy, LEGACY + 2, LEGACY + 3)
    report = _verify(legacy)
    assert (report.ok, report.first_bad_seq) == (False, LEGACY + 2), report
    assert "altered" in (report.problem or "")


@pytest.mark.req("L7")
def test_the_keyed_start_cannot_be_moved_or_removed(legacy: Services) -> None:
    _exec(legacy, "UPDATE audit_epochs SET first_seq = 8")  # widen the unkeyed part
    report = _verify(legacy)
    assert not report.ok, report
    assert "does not verify" in (report.problem or "")
    _exec(legacy, "DELETE FROM audit_epochs")  # no marker: the old records no longer pass
    report = _verify(legacy)
    assert (report.ok, report.first_bad_seq) == (False, 1), report


@pytest.mark.req("L7")
def test_a_cut_into_the_old_part_is_caught_even_without_the_head_file(legacy: Services) -> None:
    _exec(legacy, "DELETE FROM audit_log WHERE seq >= 4")
    headless = _verify(legacy, AuditSeal(legacy.audit_seal.key))  # the marker still pins record 5
    assert (headless.ok, headless.first_bad_seq) == (False, 4), headless
    assert "cut short" in (headless.problem or "")
    assert not _verify(legacy).ok


@pytest.mark.req("L5", "L7")
def test_retention_can_prune_part_of_the_old_records(legacy: Services) -> None:
    signer = legacy.keyring.current
    result = prune(
        legacy.db,
        cutoff=1_000_002.5,  # records 1 and 2 (old, unkeyed) are older
        now=2e6,
        kid=signer.kid,
        sign=signer.sign,
        keys=stored_public_keys(legacy.db),
        seal=legacy.audit_seal,
    )
    assert (result.deleted, result.checkpoint_seq) == (2, 2)
    report = _verify(legacy)
    assert report.ok, report
    assert (report.root_seq, report.checked) == (2, LEGACY + 1)
