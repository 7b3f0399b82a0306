"""Refresh tokens (A5): opaque, stored as SHA-256, rotated on each use, grouped in families.

A refresh token is ``grt_`` + 256 random bits. Each use atomically marks the presented token
used (``UPDATE ... WHERE used_at IS NULL``) and issues its successor in the same family. Presenting a token
that was already used is reuse: somebody holds a copy, so the whole family (every token descended
from that login, and the access tokens carrying its ``sid``) is revoked.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass

import sqlalchemy as sa

from garrison.clock import Clock, system_clock
from garrison.errors import AuthenticationError, RefreshReuseError
from garrison.storage.bus import InvalidationBus
from garrison.storage.db import Database
from garrison.storage.schema import refresh_families, refresh_tokens

PREFIX = "grt_"
_MAX_LEN = 128


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _new_token() -> str:
    return PREFIX + secrets.token_urlsafe(32)


@dataclass(frozen=True, slots=True)
class Rotation:
    family_id: str
    user_id: str
    refresh_token: str


class SessionStore:
    def __init__(
        self, db: Database, bus: InvalidationBus, *, ttl: int, clock: Clock = system_clock
    ) -> None:
        self.db = db
        self.bus = bus
        self.ttl = ttl
        self.clock = clock

    def start(self, user_id: str, tenant: str | None) -> Rotation:
        """A new family (a login) and its first refresh token."""
        now = self.clock()
        family_id = str(uuid.uuid4())
        token = _new_token()
        with self.db.begin() as conn:
            conn.execute(
                refresh_families.insert().values(
                    id=family_id,
                    user_id=user_id,
                    tenant=tenant,
                    created_at=now,
                    expires_at=now + self.ttl,
                )
            )
            conn.execute(
                refresh_tokens.insert().values(
                    token_hash=token_hash(token), family_id=family_id, created_at=now
                )
            )
        return Rotation(family_id, user_id, token)

    def rotate(self, token: str) -> Rotation:
        """Spend ``token`` and return its successor; reuse revokes the family."""
        if not isinstance(token, str) or not token.startswith(PREFIX) or len(token) > _MAX_LEN:
            raise AuthenticationError("invalid refresh token", code="invalid_refresh_token")
        digest = token_hash(token)
        now = self.clock()
        with self.db.begin() as conn:
            spent = conn.execute(
                sa.update(refresh_tokens)
                .where(refresh_tokens.c.token_hash == digest, refresh_tokens.c.used_at.is_(None))
                .values(used_at=now)
            )
            row = conn.execute(
                sa.select(
                    refresh_families.c.id,
                    refresh_families.c.user_id,
                    refresh_families.c.revoked_at,
                    refresh_families.c.expires_at,
                )
                .select_from(refresh_tokens.join(refresh_families))
                .where(refresh_tokens.c.token_hash == digest)
            ).first()
            if row is None:
                raise AuthenticationError("invalid refresh token", code="invalid_refresh_token")
            if spent.rowcount != 1:
                if row.revoked_at is None:
                    self._revoke(conn, row.id, now, "refresh_reuse")
                reuse = True
            else:
                reuse = False
                if row.revoked_at is not None or row.expires_at <= now:
                    raise AuthenticationError("session ended", code="invalid_refresh_token")
                successor = _new_token()
                conn.execute(
                    refresh_tokens.insert().values(
                        token_hash=token_hash(successor), family_id=row.id, created_at=now
                    )
                )
        if reuse:  # committed above: the revocation stands although we refuse
            self.bus.publish("family", row.id)
            raise RefreshReuseError(
                "refresh token reused; the session has been revoked", code="refresh_reuse"
            )
        return Rotation(row.id, row.user_id, successor)

    def family_of(self, token: str) -> str | None:
        with self.db.begin() as conn:
            return conn.execute(
                sa.select(refresh_tokens.c.family_id).where(
                    refresh_tokens.c.token_hash == token_hash(token)
                )
            ).scalar_one_or_none()

    def owner_of(self, token: str) -> tuple[str, str] | None:
        """``(family_id, user_id)`` of a refresh token, or None for a token never issued."""
        with self.db.begin() as conn:
            row = conn.execute(
                sa.select(refresh_families.c.id, refresh_families.c.user_id)
                .select_from(refresh_tokens.join(refresh_families))
                .where(refresh_tokens.c.token_hash == token_hash(token))
            ).first()
        return None if row is None else (row.id, row.user_id)

    def revoke(self, family_id: str, reason: str = "logout") -> bool:
        with self.db.begin() as conn:
            done = self._revoke(conn, family_id, self.clock(), reason)
        self.bus.publish("family", family_id)
        return done

    def is_revoked(self, family_id: str) -> bool:
        with self.db.begin() as conn:
            row = conn.execute(
                sa.select(refresh_families.c.revoked_at, refresh_families.c.expires_at).where(
                    refresh_families.c.id == family_id
                )
            ).first()
        return row is None or row.revoked_at is not None or row.expires_at <= self.clock()

    def prune(self, cutoff: float) -> int:
        """Retention (V5): delete the refresh families (sessions, cookie sessions included) that
        ended before ``cutoff``, revoked or expired, with their tokens; the number of families.
        A live session is never touched; a pruned one's token is then simply unknown (401)."""
        ended = sa.or_(
            refresh_families.c.expires_at < cutoff,
            sa.and_(
                refresh_families.c.revoked_at.is_not(None), refresh_families.c.revoked_at < cutoff
            ),
        )
        old = sa.select(refresh_families.c.id).where(ended)
        with self.db.begin() as conn:  # every tenant's rows (row-level security: ALL_TENANTS)
            conn.execute(sa.delete(refresh_tokens).where(refresh_tokens.c.family_id.in_(old)))
            done = conn.execute(sa.delete(refresh_families).where(ended))
        return int(done.rowcount or 0)

    @staticmethod
    def _revoke(conn: sa.Connection, family_id: str, now: float, reason: str) -> bool:
        result = conn.execute(
            sa.update(refresh_families)
            .where(refresh_families.c.id == family_id, refresh_families.c.revoked_at.is_(None))
            .values(revoked_at=now, revoked_reason=reason)
        )
        return bool(result.rowcount)
