"""What Garrison holds about one person, and how it is erased (V4).

The export is everything stored about the user: profile, sessions (refresh families), API keys,
secrets they created (names only) and the audit records they are the actor of, directly or through
one of their API keys. It never contains a password hash, a token or key hash, an API key's lookup
part, or a secret value: those are credentials, not personal data, and an export file travels.

The second factor appears as dates and a count of unused recovery codes, never the seed or a code.

Erasure deletes the user, their refresh tokens and families, their API keys and their second factor
(TOTP seed, recovery codes, pending logins) in one transaction.
Audit records stay as they are: the hash chain must keep verifying (L7), and they name the user
only by an id that no longer resolves to anyone. The erasure itself is audited by the caller.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

import sqlalchemy as sa

from garrison.errors import ConflictError, NotFoundError
from garrison.storage.bus import InvalidationBus
from garrison.storage.db import Database
from garrison.storage.schema import (
    api_keys,
    audit_log,
    mfa_challenges,
    mfa_recovery_codes,
    mfa_totp,
    refresh_families,
    refresh_tokens,
    users,
    vault_secrets,
)

EXPORT_FORMAT = "garrison-user-export/1"
_USER_FIELDS = (
    "id", "username", "email", "roles", "tenant", "active", "external_subject",
    "created_at", "updated_at", "tokens_valid_after",
)  # fmt: skip
_SESSION_FIELDS = ("id", "tenant", "created_at", "expires_at", "revoked_at", "revoked_reason")
_KEY_FIELDS = (
    "id", "name", "scopes", "tenant", "created_at", "expires_at", "revoked_at", "last_used_at",
)  # fmt: skip
_AUDIT_FIELDS = (
    "seq", "ts", "action", "actor", "tenant", "ip", "user_agent", "outcome", "reason",
    "request_id", "details",
)  # fmt: skip
_SECRET_FIELDS = ("name", "tenant", "created_at", "updated_at")


@dataclass(frozen=True, slots=True)
class ErasureReport:
    user_id: str
    username: str
    sessions: int
    api_keys: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _rows(
    conn: sa.Connection,
    table: sa.Table,
    fields: tuple[str, ...],
    where: sa.ColumnElement[bool],
    order: str,
) -> list[dict[str, Any]]:
    """``fields`` of the rows of ``table`` that ``where`` picks, ordered by column ``order``."""
    query = sa.select(table).where(where).order_by(table.c[order])
    return [_pick(r, fields) for r in conn.execute(query)]


def _pick(row: Any, names: tuple[str, ...]) -> dict[str, Any]:
    mapping = row._mapping
    return {name: mapping[name] for name in names}


def _user_row(conn: sa.Connection, user_id: str) -> Any:
    row = conn.execute(sa.select(users).where(users.c.id == user_id)).first()
    if row is None:
        raise NotFoundError("no such user")
    return row


def export_user(
    db: Database,
    user_id: str,
    *,
    now: float,
    email_of: Callable[[Any], str | None] | None = None,
) -> dict[str, Any]:
    """Everything held about ``user_id`` as one JSON-ready document (one consistent read).
    ``email_of`` opens the encrypted email of the row (``UserStore.email_of``, V2)."""
    with db.begin() as conn:
        row = _user_row(conn, user_id)
        email = email_of(row) if email_of is not None else row.email
        profile = _pick(row, _USER_FIELDS) | {
            "email": email,
            "has_password": row.password_hash is not None,
        }
        sessions = _rows(
            conn,
            refresh_families,
            _SESSION_FIELDS,
            refresh_families.c.user_id == user_id,
            "created_at",
        )
        keys = _rows(conn, api_keys, _KEY_FIELDS, api_keys.c.user_id == user_id, "created_at")
        secrets = _rows(
            conn, vault_secrets, _SECRET_FIELDS, vault_secrets.c.created_by == user_id, "name"
        )
        audit = list(_audit_records(conn, [user_id, *(k["id"] for k in keys)]))
        mfa = _mfa_facts(conn, user_id)
    return {
        "format": EXPORT_FORMAT,
        "exported_at": now,
        "user": profile,
        "sessions": sessions,
        "api_keys": keys,
        "vault_secrets_created": secrets,
        "audit_records": audit,
        "mfa": mfa,
    }


def _mfa_facts(conn: sa.Connection, user_id: str) -> dict[str, Any]:
    """Whether the user has a second factor (A14): dates and counts, never the seed or a code."""
    row = conn.execute(
        sa.select(mfa_totp.c.created_at, mfa_totp.c.confirmed_at).where(
            mfa_totp.c.user_id == user_id
        )
    ).first()
    left = conn.execute(
        sa.select(sa.func.count())
        .select_from(mfa_recovery_codes)
        .where(mfa_recovery_codes.c.user_id == user_id, mfa_recovery_codes.c.used_at.is_(None))
    ).scalar_one()
    return {
        "totp": None
        if row is None
        else {"created_at": row.created_at, "confirmed_at": row.confirmed_at},
        "recovery_codes_left": int(left),
    }


def _audit_records(conn: sa.Connection, actors: list[str]) -> Iterator[dict[str, Any]]:
    rows = conn.execution_options(yield_per=1000).execute(
        sa.select(*[audit_log.c[n] for n in _AUDIT_FIELDS])
        .where(audit_log.c.actor.in_(actors))
        .order_by(audit_log.c.seq)
    )
    for row in rows:
        yield _pick(row, _AUDIT_FIELDS)


def erase_user(db: Database, bus: InvalidationBus, user_id: str) -> ErasureReport:
    """Delete the user with their sessions and API keys; the last admin is refused."""
    with db.begin(immediate=True) as conn:
        row = _user_row(conn, user_id)
        if "admin" in (row.roles or ()) and _admins(conn) <= 1:
            raise ConflictError("the last admin cannot be deleted; make another admin first")
        families = list(
            conn.execute(
                sa.select(refresh_families.c.id).where(refresh_families.c.user_id == user_id)
            ).scalars()
        )
        key_ids = list(
            conn.execute(sa.select(api_keys.c.id).where(api_keys.c.user_id == user_id)).scalars()
        )
        if families:
            conn.execute(sa.delete(refresh_tokens).where(refresh_tokens.c.family_id.in_(families)))
            conn.execute(sa.delete(refresh_families).where(refresh_families.c.id.in_(families)))
        conn.execute(sa.delete(api_keys).where(api_keys.c.user_id == user_id))
        for table in (mfa_challenges, mfa_recovery_codes, mfa_totp):  # the second factor (A14)
            conn.execute(sa.delete(table).where(table.c.user_id == user_id))
        conn.execute(sa.delete(users).where(users.c.id == user_id))
    # caches on every replica drop the user, its sessions and keys now, not at their TTL
    bus.publish("user", user_id)
    for family in families:
        bus.publish("family", family)
    for key_id in key_ids:
        bus.publish("apikey", key_id)
    return ErasureReport(user_id, row.username, len(families), len(key_ids))


def _admins(conn: sa.Connection) -> int:
    roles = conn.execute(sa.select(users.c.roles)).scalars()
    return sum(1 for held in roles if "admin" in (held or ()))
