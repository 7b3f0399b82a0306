"""Refresh tokens (A5): opaque, stored as SHA-256, rotated on each use, grouped in families.

A refresh token is ``grt_`` + 256 random bits. Each use atomically marks the presented token
used (``UPDATE ... WHERE used_at IS NULL``) and issues its successor in the same family. Presenting a token
that was already used is reuse: somebody holds a copy, so the whole family (every token descended
from that login, and the access tokens carrying its ``sid``) is revoked.

Lifetimes (A16, ASVS 7.3): a family ends ``idle_ttl`` seconds after its last use (its login or a
refresh) and ``absolute_ttl`` seconds after its login, whichever comes first; a refresh after
either is refused (401). Use is recorded at refresh granularity (not on every request), so a client
that stays active refreshes at least once per access-token lifetime. Each family keeps where it was
last used from (address, user agent) for ``GET /auth/sessions``.
"""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from garrison.clock import Clock, system_clock
from garrison.errors import AuthenticationError, RefreshReuseError
from garrison.identity.digest import token_hash
from garrison.storage.bus import InvalidationBus
from garrison.storage.db import Database
from garrison.storage.schema import refresh_families, refresh_tokens

PREFIX = "grt_"
_MAX_LEN = 128
_MAX_IP = 64
_MAX_AGENT = 400
IDLE = "session idle too long"
ABSOLUTE = "session reached its absolute lifetime"


def _new_token() -> str:
    return PREFIX + secrets.token_urlsafe(32)


@dataclass(frozen=True, slots=True)
class Rotation:
    family_id: str
    user_id: str
    refresh_token: str
    #: how the login behind the family was proven (RFC 8176), and when: every access token of the
    #: family carries both, so a refresh never adds a factor nor loses one (A14)
    amr: tuple[str, ...] = ("pwd",)
    auth_time: float | None = None


@dataclass(frozen=True, slots=True)
class Seen:
    """Where a login or refresh came from (recorded on its family, A16)."""

    ip: str | None = None
    user_agent: str | None = None

    def values(self) -> dict[str, Any]:
        return {
            "ip": self.ip[:_MAX_IP] if self.ip else None,
            "user_agent": self.user_agent[:_MAX_AGENT] if self.user_agent else None,
        }


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """One live session of a user, as ``GET /auth/sessions`` shows it."""

    id: str
    created_at: float
    last_used_at: float
    ip: str | None
    user_agent: str | None
    amr: tuple[str, ...]

    def public(self, current: str | None) -> dict[str, Any]:
        return {
            "id": self.id,
            "created_at": self.created_at,
            "last_used_at": self.last_used_at,
            "ip": self.ip,
            "user_agent": self.user_agent,
            "amr": list(self.amr),
            "current": self.id == current,
        }


class SessionStore:
    def __init__(
        self,
        db: Database,
        bus: InvalidationBus,
        *,
        ttl: int,
        clock: Clock = system_clock,
        idle_ttl: int | None = None,
        absolute_ttl: int | None = None,
    ) -> None:
        self.db = db
        self.bus = bus
        self.ttl = ttl
        self.clock = clock
        self.idle_ttl = idle_ttl  # None: no idle timeout
        self.absolute_ttl = absolute_ttl if absolute_ttl is not None else ttl

    def start(
        self,
        user_id: str,
        tenant: str | None,
        *,
        amr: tuple[str, ...] = ("pwd",),
        seen: Seen | None = None,
    ) -> Rotation:
        """A new family (a login proven by ``amr``) and its first refresh token."""
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
                    expires_at=now + min(self.ttl, self.absolute_ttl),
                    amr=list(amr),
                    auth_time=now,
                    last_used_at=now,
                    **(seen or Seen()).values(),
                )
            )
            conn.execute(
                refresh_tokens.insert().values(
                    token_hash=token_hash(token), family_id=family_id, created_at=now
                )
            )
        return Rotation(family_id, user_id, token, tuple(amr), now)

    def rotate(self, token: str, *, seen: Seen | None = None) -> Rotation:
        """Spend ``token`` and return its successor; reuse revokes the family; a family idle too
        long or past its absolute lifetime is refused (A16)."""
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
                    refresh_families.c.amr,
                    refresh_families.c.auth_time,
                    refresh_families.c.created_at,
                    refresh_families.c.last_used_at,
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
                ended = self._lifetime_over(row.created_at, row.last_used_at, now)
                if ended is not None and row.revoked_at is None:
                    raise AuthenticationError(ended, code="invalid_refresh_token")
                if row.revoked_at is not None or row.expires_at <= now:
                    raise AuthenticationError("session ended", code="invalid_refresh_token")
                conn.execute(
                    sa.update(refresh_families)
                    .where(refresh_families.c.id == row.id)
                    .values(last_used_at=now, **(seen or Seen()).values())
                )
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
        # a family from before revision 0006 has no amr: its login was a password (assumed weakest)
        amr = tuple(str(m) for m in row.amr) if isinstance(row.amr, list) else ("pwd",)
        return Rotation(row.id, row.user_id, successor, amr, row.auth_time)

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
                sa.select(
                    refresh_families.c.revoked_at,
                    refresh_families.c.expires_at,
                    refresh_families.c.created_at,
                ).where(refresh_families.c.id == family_id)
            ).first()
        if row is None or row.revoked_at is not None:
            return True
        now = self.clock()
        return bool(row.expires_at <= now or row.created_at + self.absolute_ttl <= now)

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

    # -- lifetimes and the user's own sessions (A16) ---------------------------------------------
    def _lifetime_over(
        self, created_at: float, last_used_at: float | None, now: float
    ) -> str | None:
        """Why a family's lifetime is over (absolute, idle), or None while it lives. A family
        from before revision 0007 has no ``last_used_at``: its login counts as its last use."""
        if created_at + self.absolute_ttl <= now:
            return ABSOLUTE
        last = last_used_at if last_used_at is not None else created_at
        if self.idle_ttl is not None and last + self.idle_ttl <= now:
            return IDLE
        return None

    def live_sessions(self, user_id: str) -> list[SessionInfo]:
        """The user's sessions that could still be refreshed, most recently used first."""
        now = self.clock()
        with self.db.begin() as conn:
            rows = conn.execute(
                sa.select(refresh_families).where(
                    refresh_families.c.user_id == user_id,
                    refresh_families.c.revoked_at.is_(None),
                    refresh_families.c.expires_at > now,
                )
            ).all()
        found = []
        for row in rows:
            if self._lifetime_over(row.created_at, row.last_used_at, now) is not None:
                continue
            amr = row._mapping.get("amr")  # recorded since the MFA revision; else a password
            found.append(
                SessionInfo(
                    id=row.id,
                    created_at=row.created_at,
                    last_used_at=row.last_used_at or row.created_at,
                    ip=row.ip,
                    user_agent=row.user_agent,
                    amr=tuple(str(m) for m in amr) if isinstance(amr, list) else ("pwd",),
                )
            )
        found.sort(key=lambda info: info.last_used_at, reverse=True)
        return found

    def end_own(self, user_id: str, family_id: str, reason: str = "ended_by_user") -> bool:
        """End one live session of ``user_id``; False (nothing done) when ``family_id`` is not
        one: another user's session is never touched."""
        if not isinstance(family_id, str) or len(family_id) > 36 or "\x00" in family_id:
            return False
        now = self.clock()
        alive = [info.id for info in self.live_sessions(user_id)]
        if family_id not in alive:
            return False
        with self.db.begin() as conn:
            done = conn.execute(
                sa.update(refresh_families)
                .where(
                    refresh_families.c.id == family_id,
                    refresh_families.c.user_id == user_id,
                    refresh_families.c.revoked_at.is_(None),
                )
                .values(revoked_at=now, revoked_reason=reason)
            )
        if not done.rowcount:
            return False
        self.bus.publish("family", family_id)
        return True
