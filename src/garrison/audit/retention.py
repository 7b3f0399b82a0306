"""Retention (L5, V5): delete records older than a cut-off, leaving a chain that still verifies.

The pruned prefix is verified first (a checkpoint must never launder a tampered record), then a
signed checkpoint takes its last hash as the new root, and the prefix is deleted, all in one
transaction holding the chain lock, so concurrent writers simply continue after it.

On PostgreSQL only the migrator may delete audit records (``garrison db roles``, revision 0003):
``garrison audit prune`` connects with ``GARRISON_MIGRATOR_DATABASE_URL``; under the runtime role
the delete is refused, and so is the prune, with that setting named.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg
import sqlalchemy as sa

from garrison.audit.checkpoint import Sign, make_checkpoint, store_checkpoint
from garrison.audit.head import AuditSeal
from garrison.audit.verify import KeyLookup, verify_chain
from garrison.audit.writer import chain_head, chain_root, lock_chain
from garrison.errors import ConfigError, ConflictError
from garrison.storage.db import Database
from garrison.storage.schema import audit_log


@dataclass(frozen=True, slots=True)
class PruneResult:
    deleted: int
    checkpoint_seq: int | None  # None when nothing was old enough
    cutoff: float


@contextlib.contextmanager
def _as_migrator() -> Iterator[None]:
    """Retention deletes audit records, which only the migrator may: name the setting if not."""
    try:
        yield
    except sa.exc.DBAPIError as exc:
        if not isinstance(exc.orig, psycopg.errors.InsufficientPrivilege):
            raise
        raise ConfigError(
            [
                "GARRISON_MIGRATOR_DATABASE_URL: audit prune deletes audit records, which the "
                f"runtime role may not ({str(exc.orig).splitlines()[0]}); set it to the "
                "migrator's DSN"
            ]
        ) from None


def prune(
    db: Database,
    *,
    cutoff: float,
    now: float,
    kid: str,
    sign: Sign,
    keys: KeyLookup,
    seal: AuditSeal,
) -> PruneResult:
    """Delete every record before the first one at or after ``cutoff``; checkpoint the rest."""
    with _as_migrator(), db.begin(immediate=True) as conn:
        lock_chain(db, conn)
        root_seq, _ = chain_root(conn)
        last = _last_prunable(conn, cutoff)
        if last <= root_seq:
            return PruneResult(0, None, cutoff)
        report = verify_chain(db, keys, seal, upto=last, conn=conn)
        if not report.ok or report.head_seq != last:
            raise ConflictError(
                "refusing to prune: the records to delete do not verify",
                reasons=[report.problem or "chain incomplete"],
            )
        store_checkpoint(conn, make_checkpoint(last, report.head_hash, now, kid, sign))
        deleted = conn.execute(sa.delete(audit_log).where(audit_log.c.seq <= last)).rowcount
        return PruneResult(int(deleted), last, cutoff)


def _last_prunable(conn: sa.Connection, cutoff: float) -> int:
    """The end of the old prefix: just before the first record at or after ``cutoff``."""
    first_kept = conn.execute(
        sa.select(sa.func.min(audit_log.c.seq)).where(audit_log.c.ts >= cutoff)
    ).scalar_one_or_none()
    if first_kept is not None:
        return int(first_kept) - 1
    return chain_head(conn)[0]
