"""The signing keyring (A6): the newest key signs, every live key verifies, JWKS publishes them.

Keys live in the database (shared by every replica), private halves sealed with AES-256-GCM under
``GARRISON_KEYRING_KEY``. A normal rotation *retires* the old key: it stops signing but verifies until
the longest access token it signed has expired. An emergency rotation *revokes* every older key at
once: its tokens fail everywhere as soon as replicas reload (pub/sub ``keys``; unknown ``kid`` reloads
are rate-limited so a forged ``kid`` cannot force database reads). Without a cross-process bus (or
when a message is lost) every replica also re-reads the key rows every ``refresh_interval`` seconds,
so a ``garrison keys rotate --emergency`` run from another process takes effect within that bound.
Key objects are loaded once per ``kid`` and reused, so a re-read costs one small SELECT.
"""

from __future__ import annotations

import logging
import secrets
import threading
from dataclasses import KW_ONLY, dataclass, field
from typing import Any

import sqlalchemy as sa

from garrison.clock import Clock, system_clock
from garrison.keys import algorithms
from garrison.keys.sealing import seal, unseal
from garrison.storage.db import Database
from garrison.storage.schema import signing_keys

log = logging.getLogger("garrison.keys")

DAY = 86400.0
_RELOAD_MIN_INTERVAL = 2.0
#: PostgreSQL advisory lock taken by every keyring write (first key, rotation): one at a time.
_ADVISORY_LOCK = 7011


@dataclass(frozen=True, slots=True)
class KeyInfo:
    kid: str
    alg: str
    status: str  # active | retired | revoked | expired
    created_at: float
    rotate_by: float
    retired_at: float | None
    revoked_at: float | None
    overdue: bool  # active past its rotate-by date (C5)


@dataclass(frozen=True, slots=True)
class _Signer:
    kid: str
    alg: str
    sign: Any  # Callable[[bytes], bytes]


@dataclass(eq=False, repr=False)
class Keyring:
    db: Database
    kek: bytes
    _: KW_ONLY
    alg: str = "PS256"
    verify_window: float = 900.0  # how long a retired key keeps verifying
    rotate_days: int = 90
    refresh_interval: float = 1.0
    clock: Clock = system_clock
    #: False while a background task refreshes (``garrison serve``): no database read on a
    #: request's path. True where nothing else would (CLI, library use).
    refresh_inline: bool = field(default=True, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)
    _signer: _Signer | None = field(default=None, init=False)
    #: kid -> (alg, verify function); read lock-free on the hot path
    verifiers: dict[str, tuple[str, algorithms.Verifier]] = field(default_factory=dict, init=False)
    _jwks: dict[str, Any] = field(default_factory=lambda: {"keys": []}, init=False)
    _last_reload: float = field(default=0.0, init=False)
    #: kid -> (verify, sign): unsealing and parsing a key is done once per kid, not per reload
    _loaded: dict[str, tuple[algorithms.Verifier, Any]] = field(default_factory=dict, init=False)

    # -- loading -------------------------------------------------------------------------------
    def load(self) -> None:
        """(Re)read keys from the database; creates the first key when there is none."""
        with self._lock:
            rows = self._rows()
            if not any(r.retired_at is None and r.revoked_at is None for r in rows):
                self._create(rows_exist=bool(rows))
                rows = self._rows()
            self._install(rows)

    def _rows(self) -> list[sa.Row[Any]]:
        with self.db.begin() as conn:
            return list(conn.execute(sa.select(signing_keys).order_by(signing_keys.c.created_at)))

    def _install(self, rows: list[sa.Row[Any]]) -> None:
        now = self.clock()
        verifiers: dict[str, tuple[str, algorithms.Verifier]] = {}
        jwks = []
        signer: _Signer | None = None
        for row in rows:
            if row.revoked_at is not None:
                continue
            if row.retired_at is not None and row.retired_at + self.verify_window < now:
                continue
            verify, sign = self._key_functions(row)
            verifiers[row.kid] = (row.alg, verify)
            jwks.append(dict(row.public_jwk))
            if row.retired_at is None:
                signer = _Signer(row.kid, row.alg, sign)
        self._loaded = {kid: self._loaded[kid] for kid in verifiers}  # revoked ones are forgotten
        self.verifiers = verifiers
        self._jwks = {"keys": jwks[::-1]}  # newest first
        self._signer = signer
        self._last_reload = now

    def _key_functions(self, row: sa.Row[Any]) -> tuple[algorithms.Verifier, Any]:
        loaded = self._loaded.get(row.kid)
        if loaded is None:
            key = algorithms.load_private(unseal(self.kek, row.private_key, row.kid.encode()))
            loaded = (
                algorithms.verifier(key.public_key(), row.alg),
                algorithms.signer(key, row.alg),
            )
            self._loaded[row.kid] = loaded
        return loaded

    def refresh_if_stale(self) -> None:
        """Re-read the key rows when the last read is older than ``refresh_interval``.

        Called on every verify, so it is one comparison when fresh. Never blocks behind another
        thread's reload, and a database error keeps the keys already loaded (logged): an outage
        must not turn every valid token into a 401 or a 500.
        """
        if self.clock() - self._last_reload < self.refresh_interval or self._signer is None:
            return
        if not self._lock.acquire(blocking=False):
            return
        try:
            self._last_reload = self.clock()
            self._install(self._rows())
        except Exception:
            log.warning("could not re-read signing keys; keeping the loaded ones", exc_info=True)
        finally:
            self._lock.release()

    def maybe_reload(self) -> bool:
        """Reload after an unknown ``kid``, at most once every couple of seconds."""
        if self.clock() - self._last_reload < _RELOAD_MIN_INTERVAL:
            return False
        self.load()
        return True

    # -- use -----------------------------------------------------------------------------------
    @property
    def current(self) -> _Signer:
        if self._signer is None:
            self.load()
        assert self._signer is not None
        return self._signer

    def jwks(self) -> dict[str, Any]:
        if self._signer is None:
            self.load()
        return self._jwks

    # -- rotation ------------------------------------------------------------------------------
    def rotate(self, *, emergency: bool = False, alg: str | None = None) -> str:
        """Make a new signing key; retire (or, in an emergency, revoke) every older one."""
        with self._lock:
            now = self.clock()
            with self.db.begin(immediate=True) as conn:
                self._serialise(conn)
                column = signing_keys.c.revoked_at if emergency else signing_keys.c.retired_at
                stmt = sa.update(signing_keys).where(column.is_(None)).values({column.name: now})
                if not emergency:
                    stmt = stmt.where(signing_keys.c.revoked_at.is_(None))
                conn.execute(stmt)
                if emergency:  # revoked keys are retired too
                    conn.execute(
                        sa.update(signing_keys)
                        .where(signing_keys.c.retired_at.is_(None))
                        .values(retired_at=now)
                    )
                kid = self._insert(conn, alg or self.alg, now)
            self._install(self._rows())
            return kid

    def _create(self, *, rows_exist: bool) -> None:
        with self.db.begin(immediate=True) as conn:
            self._serialise(conn)  # two replicas starting at once make one key, not two
            live = conn.execute(
                sa.select(sa.func.count())
                .select_from(signing_keys)
                .where(signing_keys.c.retired_at.is_(None), signing_keys.c.revoked_at.is_(None))
            ).scalar_one()
            if not live:
                self._insert(conn, self.alg, self.clock())

    def _serialise(self, conn: sa.Connection) -> None:
        """On PostgreSQL, one keyring write at a time (SQLite's ``BEGIN IMMEDIATE`` does this)."""
        if self.db.is_postgres:
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _ADVISORY_LOCK})

    def _insert(self, conn: sa.Connection, alg: str, now: float) -> str:
        kid = f"{alg.lower()}-{int(now)}-{secrets.token_hex(4)}"
        key = algorithms.generate(alg)
        conn.execute(
            signing_keys.insert().values(
                kid=kid,
                alg=alg,
                private_key=seal(self.kek, algorithms.private_der(key), kid.encode()),
                public_jwk=algorithms.public_jwk(key, alg, kid),
                created_at=now,
                rotate_by=now + self.rotate_days * DAY,
            )
        )
        return kid

    def list(self) -> list[KeyInfo]:
        now = self.clock()
        out = []
        for row in self._rows():
            if row.revoked_at is not None:
                status = "revoked"
            elif row.retired_at is None:
                status = "active"
            elif row.retired_at + self.verify_window >= now:
                status = "retired"
            else:
                status = "expired"
            out.append(
                KeyInfo(
                    row.kid,
                    row.alg,
                    status,
                    row.created_at,
                    row.rotate_by,
                    row.retired_at,
                    row.revoked_at,
                    status == "active" and row.rotate_by < now,
                )
            )
        return out
