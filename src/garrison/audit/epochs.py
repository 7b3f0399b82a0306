"""Where the keyed chain starts (L7, O2): the one marker that lets pre-HMAC records keep verifying.

Records written before revision 0003 carry plain SHA-256 hashes, which anyone can recompute. When
``garrison db upgrade`` applies 0003 it writes one marker, MACed with the audit key: "records from
``first_seq`` on are keyed; the record before it hashed to ``prev_hash``". The verifier checks old
records the old way only below ``first_seq``, and checks that record ``first_seq - 1`` still has
that hash, so a rewrite of the old part, re-hashed the old way, is still caught (the first keyed
record's HMAC covers that hash too).

The marker cannot be forged or moved from the database (its MAC needs the key). Deleting it makes
every old record fail (the verifier then treats the whole log as keyed): loud, never silent. With
several markers (only possible by running the migration again), the lowest start wins, so a later
one can never widen the unkeyed part. A fresh chain gets no marker: every record is keyed.
Limitation: the marker is trusted when ``db upgrade`` writes it; rewrite the log before the upgrade
and the rewrite is what gets marked (verify before upgrading, as the upgrade notes say).
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from garrison.audit.chain import ChainKey
from garrison.audit.writer import chain_head, lock_chain
from garrison.storage.db import Database
from garrison.storage.schema import audit_epochs, audit_log

#: The revision that keys the chain; `db upgrade` marks the start right after applying it.
KEYED_REVISION = "0003"


@dataclass(frozen=True, slots=True)
class KeyedStart:
    """Records below ``first_seq`` are unkeyed; ``first_seq - 1`` hashed to ``prev_hash``."""

    first_seq: int
    prev_hash: str


#: No marker: every record is keyed.
ALL_KEYED = KeyedStart(1, "")


def _payload(first_seq: int, prev_hash: str, created_at: float) -> dict[str, object]:
    return {"first_seq": first_seq, "prev_hash": prev_hash, "created_at": repr(float(created_at))}


def mark_keyed_start(db: Database, key: ChainKey, now: float) -> KeyedStart | None:
    """Mark that records after the current head are keyed; None when there is nothing unkeyed."""
    with db.begin(immediate=True) as conn:
        lock_chain(db, conn)
        if conn.execute(sa.select(sa.func.count()).select_from(audit_epochs)).scalar_one():
            return None  # marked already
        seq, hash_ = chain_head(conn)
        if seq == 0 or _keyed(conn, key, seq, hash_):
            return None  # a fresh chain, or keyed records already: nothing to mark
        conn.execute(
            audit_epochs.insert().values(
                first_seq=seq + 1,
                prev_hash=hash_,
                created_at=now,
                mac=key.seal("keyed-start", _payload(seq + 1, hash_, now)),
            )
        )
        return KeyedStart(seq + 1, hash_)


def _keyed(conn: sa.Connection, key: ChainKey, seq: int, hash_: str) -> bool:
    row = conn.execute(sa.select(audit_log).where(audit_log.c.seq == seq)).first()
    if row is None:
        return False  # the head is a retention checkpoint: treat what came before as unkeyed
    record = row._asdict()
    return bool(key.record_hash(record, record["prev_hash"]) == hash_)


def keyed_start(conn: sa.Connection, key: ChainKey) -> KeyedStart | str:
    """The verified marker (or ``ALL_KEYED``); a string names a marker that does not verify."""
    rows = conn.execute(sa.select(audit_epochs).order_by(audit_epochs.c.first_seq)).all()
    for row in rows:
        payload = _payload(int(row.first_seq), row.prev_hash, float(row.created_at))
        if not key.sealed("keyed-start", payload, row.mac):
            return (
                f"the keyed-chain marker at record {row.first_seq} does not verify under "
                "GARRISON_AUDIT_KEY (forged, altered, or another key)"
            )
    if not rows:
        return ALL_KEYED
    return KeyedStart(int(rows[0].first_seq), rows[0].prev_hash)
