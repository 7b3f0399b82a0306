"""Prove the audit log is whole (L7): walk the chain from its root and name the first bad record.

Each record must carry the next sequence number, point at the previous record's hash, and hash to
what it says: an HMAC under the audit key (records before the keyed-start marker: plain SHA-256,
``garrison.audit.epochs``). That catches a record edited (its hash no longer matches), rewritten
and re-hashed (the attacker lacks the key), deleted (a gap, or a broken link when the rest was
renumbered), inserted or reordered (a broken link). The root is genesis or the newest retention
checkpoint, whose signature is checked against the signing keys.

Records cut off the *end* leave a shorter chain that is whole; the head file outside the database
(``garrison.audit.head``) catches that: the log must still reach its record, with its hash. It is
read before the walk, so a writer racing the walk cannot move it past what the walk sees. A head
an earlier run printed can also be passed as ``anchor`` (``garrison audit verify --anchor``), for
a copy kept elsewhere still; so can the JSON-lines copy (``AUDIT_LOG_PATH``) shipped off the host.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import sqlalchemy as sa

from garrison.audit.chain import GENESIS, ChainKey, legacy_hash
from garrison.audit.checkpoint import Checkpoint, latest_checkpoint
from garrison.audit.epochs import ALL_KEYED, KeyedStart, keyed_start
from garrison.audit.head import AuditSeal, Head, HeadFileError
from garrison.errors import ValidationError
from garrison.storage.db import Database
from garrison.storage.schema import audit_log

#: ``(kid) -> public JWK`` or None: where checkpoint signatures find their key.
KeyLookup = Callable[[str], Mapping[str, Any] | None]
_PAGE = 2000


@dataclass(frozen=True, slots=True)
class ChainReport:
    ok: bool
    checked: int  # records walked
    head_seq: int  # the last good record (the root's seq when there is none)
    head_hash: str
    root_seq: int  # 0, or the checkpoint the chain starts from
    first_bad_seq: int | None = None
    problem: str | None = None
    anchored_seq: int | None = None  # the head file's record, which the log still reaches

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Break:
    seq: int
    problem: str


@dataclass(eq=False, repr=False)
class ChainWalk:
    """Feed records in ``seq`` order; stops at the first one that does not follow."""

    key: ChainKey
    root_seq: int = 0
    root_hash: str = GENESIS
    start: KeyedStart = ALL_KEYED
    seq: int = field(init=False)
    hash: str = field(init=False)
    checked: int = field(default=0, init=False)
    broken: Break | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.seq = self.root_seq
        self.hash = self.root_hash
        self._pin()

    def feed(self, row: Mapping[str, Any]) -> bool:
        """True while the chain holds; False (and ``broken`` set) at the first bad record."""
        found = self._check(row)
        if found is not None:
            self.broken = found
            return False
        self.seq, self.hash = int(row["seq"]), str(row["hash"])
        self.checked += 1
        self._pin()
        return self.broken is None

    def end(self) -> None:
        """After the last record: the log must reach the record the keyed-start marker names."""
        pinned = self.start.first_seq - 1
        if self.broken is None and self.seq < pinned:
            gap = self.seq + 1
            self.broken = Break(
                gap, f"records {gap}..{pinned} missing: the log once reached {pinned} (cut short)"
            )

    def _pin(self) -> None:
        """The last unkeyed record must keep the hash the keyed-start marker recorded for it."""
        pinned = self.start.first_seq - 1
        if pinned > 0 and self.seq == pinned and self.hash != self.start.prev_hash:
            self.broken = Break(
                pinned,
                f"record {pinned} was altered: it no longer has the hash the keyed chain "
                "started from",
            )

    def _check(self, row: Mapping[str, Any]) -> Break | None:
        seq, prev_seq, prev_hash = int(row["seq"]), self.seq, self.hash
        expected = prev_seq + 1
        if seq < expected:
            return Break(seq, f"record {seq} is out of place: the chain is already at {prev_seq}")
        if seq > expected:
            span = f"{expected}" if seq == expected + 1 else f"{expected}..{seq - 1}"
            return Break(expected, f"record {span} missing: deleted from the log")
        if row["prev_hash"] != prev_hash:
            return Break(
                seq, f"record {seq} does not follow record {prev_seq}: inserted or reordered"
            )
        keyed = seq >= self.start.first_seq
        digest = self.key.record_hash(row, prev_hash) if keyed else legacy_hash(row, prev_hash)
        if digest != row["hash"]:
            return Break(seq, f"record {seq} was altered: its content no longer matches its hash")
        return None

    def report(self) -> ChainReport:
        b = self.broken
        return ChainReport(
            ok=b is None,
            checked=self.checked,
            head_seq=self.seq,
            head_hash=self.hash,
            root_seq=self.root_seq,
            first_bad_seq=b.seq if b else None,
            problem=b.problem if b else None,
        )


def walk(
    rows: Iterable[Mapping[str, Any]],
    key: ChainKey,
    root_seq: int = 0,
    root_hash: str = GENESIS,
    start: KeyedStart = ALL_KEYED,
    *,
    whole: bool = True,
) -> ChainReport:
    """Check ``rows`` (in ``seq`` order) as a chain starting after ``(root_seq, root_hash)``.

    ``whole``: the rows are the entire log (not a prefix), so it must reach what the marker pins.
    """
    chain = ChainWalk(key, root_seq, root_hash, start)
    if chain.broken is None:
        for row in rows:
            if not chain.feed(row):
                break
        if whole:
            chain.end()
    return chain.report()


def verify_chain(
    db: Database,
    keys: KeyLookup,
    seal: AuditSeal,
    *,
    upto: int | None = None,
    anchor: tuple[int, str] | None = None,
    conn: sa.Connection | None = None,
) -> ChainReport:
    """Walk the stored chain from its (signature-checked) root; ``upto`` stops at that seq.

    Unless ``upto`` is given, the log must also reach the head file's record (``seal.head``).
    ``anchor`` is a ``(seq, hash)`` an earlier run reported: the chain must still hold it too.
    """
    if conn is None:
        with db.begin() as own:
            return verify_chain(db, keys, seal, upto=upto, anchor=anchor, conn=own)
    try:  # before the walk: whatever the file names was committed before the walk began
        head = seal.head.read() if seal.head is not None and upto is None else None
    except HeadFileError as exc:
        return _refused(str(exc))
    checkpoint = latest_checkpoint(conn)
    if checkpoint is not None and not checkpoint.valid(keys(checkpoint.kid)):
        return ChainReport(
            ok=False,
            checked=0,
            head_seq=checkpoint.seq,
            head_hash=checkpoint.hash,
            root_seq=checkpoint.seq,
            first_bad_seq=checkpoint.seq,
            problem=f"checkpoint at record {checkpoint.seq} has a bad signature",
        )
    start = keyed_start(conn, seal.key)
    if isinstance(start, str):
        return _refused(start)
    report = walk(_rows(conn, upto), seal.key, *_root(checkpoint), start, whole=upto is None)
    if head is not None and report.ok:
        report = _check_head(conn, report, head, seal)
    if anchor is None or not report.ok:
        return report
    return _check_anchor(conn, report, *anchor)


def _refused(problem: str) -> ChainReport:
    return ChainReport(False, 0, 0, GENESIS, 0, first_bad_seq=0, problem=problem)


def _check_head(
    conn: sa.Connection, report: ChainReport, head: Head, seal: AuditSeal
) -> ChainReport:
    assert seal.head is not None
    checked = _check_anchor(conn, report, head.seq, head.hash)
    if not checked.ok:
        fix = (
            f"per the audit head file {seal.head.path}; if the database was replaced on "
            "purpose, remove that file"
        )
        return replace(checked, problem=f"{checked.problem} ({fix})")
    return replace(checked, anchored_seq=head.seq)


def _check_anchor(conn: sa.Connection, report: ChainReport, seq: int, hash_: str) -> ChainReport:
    """A whole chain that no longer reaches, or no longer holds, an earlier head was cut or redone."""
    if seq <= report.root_seq:
        return report  # pruned since: the signed checkpoint vouches for that part
    if seq > report.head_seq:
        gap = report.head_seq + 1
        problem = f"records {gap}..{seq} missing: the log once reached {seq} (cut short)"
        return replace(report, ok=False, first_bad_seq=gap, problem=problem)
    found = conn.execute(sa.select(audit_log.c.hash).where(audit_log.c.seq == seq)).scalar()
    if found != hash_:
        problem = f"record {seq} no longer has the anchored hash: history was rewritten"
        return replace(report, ok=False, first_bad_seq=seq, problem=problem)
    return report


def parse_anchor(text: str) -> tuple[int, str]:
    """``SEQ:HASH`` as printed by a previous ``garrison audit verify``."""
    seq, _, hash_ = text.strip().partition(":")
    if not seq.isdigit() or len(hash_) != 64 or not all(c in "0123456789abcdef" for c in hash_):
        raise ValidationError("bad anchor", reasons=["anchor: SEQ:HASH from an earlier verify"])
    return int(seq), hash_


def _root(checkpoint: Checkpoint | None) -> tuple[int, str]:
    return (checkpoint.seq, checkpoint.hash) if checkpoint else (0, GENESIS)


def _rows(conn: sa.Connection, upto: int | None) -> Iterable[Mapping[str, Any]]:
    """Every record in ``seq`` order, a page at a time (keyset pagination: memory stays flat)."""
    after: int | None = None
    while True:
        query = sa.select(audit_log).order_by(audit_log.c.seq).limit(_PAGE)
        if after is not None:
            query = query.where(audit_log.c.seq > after)
        if upto is not None:
            query = query.where(audit_log.c.seq <= upto)
        page = [row._asdict() for row in conn.execute(query)]
        yield from page
        if len(page) < _PAGE:
            return
        after = int(page[-1]["seq"])
