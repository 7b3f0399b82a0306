"""The second factor's records (A14): TOTP authenticators, recovery codes, logins awaiting a code.

* A TOTP seed is sealed under the vault's key set (``garrison.vault.envelope``, bound to
  ``mfa_totp.secret`` and the user's id), never stored or logged in clear. Enrolment is pending
  until a first valid code confirms it (``PENDING_TTL``); only a confirmed authenticator is asked
  for at login. Each accepted code moves ``last_step`` forward in one conditional UPDATE, so a code
  (or any older one) replayed, even in a race between two replicas, is refused.
* Recovery codes (``garrison.identity.recovery``) are replaced as a set of ten when an authenticator
  is confirmed; spending one is a conditional UPDATE too, so each works once.
* A login whose password was right gets an ``mfa_token`` (``gmfa_`` + 256 random bits), stored as
  its SHA-256, for one user, for ``CHALLENGE_TTL`` seconds, spent by the first correct code.

Every method is blocking (database, and the caller's argon2 around it): run in a worker thread.
"""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from garrison.clock import Clock, system_clock
from garrison.identity import recovery, totp
from garrison.identity.digest import token_hash
from garrison.storage.db import Database
from garrison.storage.schema import mfa_challenges, mfa_recovery_codes, mfa_totp
from garrison.vault import EncryptedField, KeySet, envelope
from garrison.vault.envelope import SecretRef
from garrison.vault.errors import DecryptError

TOKEN_PREFIX = "gmfa_"  # noqa: S105 (a prefix, not a secret)
CHALLENGE_TTL = 300  # seconds a correct password waits for its second factor
PENDING_TTL = 900  # seconds an enrolment may wait for its first code
_MAX_TOKEN = 128
SEED_FIELD = EncryptedField("mfa_totp", "secret")
_T = mfa_totp.c
_R = mfa_recovery_codes.c
_C = mfa_challenges.c


def _ref(user_id: str) -> SecretRef:
    return SecretRef(user_id, None, "mfa.totp")


@dataclass(frozen=True, slots=True)
class Challenge:
    """A login awaiting its second factor."""

    token_hash: str
    user_id: str
    amr: tuple[str, ...]  # the factors proven so far
    session: str  # "token" or "cookie"
    created_at: float
    expires_at: float


@dataclass(frozen=True, slots=True)
class Enrolment:
    """A pending authenticator: shown once, confirmed by its first code."""

    seed: str
    created_at: float


@dataclass(eq=False, repr=False)
class MfaStore:
    db: Database
    keys: KeySet
    clock: Clock = system_clock

    # -- TOTP ----------------------------------------------------------------------------------
    def status(self, user_id: str) -> str:
        """``"none"``, ``"pending"`` or ``"confirmed"``."""
        with self.db.begin() as conn:
            row = conn.execute(sa.select(_T.confirmed_at).where(_T.user_id == user_id)).first()
        if row is None:
            return "none"
        return "pending" if row.confirmed_at is None else "confirmed"

    def enrolled(self, user_id: str) -> bool:
        """Whether the user has a confirmed authenticator (login then asks for a code)."""
        return self.status(user_id) == "confirmed"

    def begin_enrolment(self, user_id: str) -> Enrolment | None:
        """A fresh pending seed (replacing a pending one); None if one is already confirmed."""
        seed = totp.new_seed()
        version, blob = envelope.encrypt(self.keys, _ref(user_id), seed.encode(), SEED_FIELD)
        now = self.clock()
        with self.db.begin(immediate=True) as conn:
            row = conn.execute(sa.select(_T.confirmed_at).where(_T.user_id == user_id)).first()
            if row is not None and row.confirmed_at is not None:
                return None
            conn.execute(sa.delete(mfa_totp).where(_T.user_id == user_id))
            conn.execute(
                mfa_totp.insert().values(
                    user_id=user_id,
                    secret=blob,
                    key_version=version,
                    created_at=now,
                    confirmed_at=None,
                    last_step=None,
                )
            )
        return Enrolment(seed, now)

    def pending_seed(self, user_id: str) -> tuple[str, float] | None:
        """The pending seed and when it was made, or None."""
        with self.db.begin() as conn:
            row = conn.execute(
                sa.select(mfa_totp).where(_T.user_id == user_id, _T.confirmed_at.is_(None))
            ).first()
        if row is None:
            return None
        return self._open(row), row.created_at

    def confirm(self, user_id: str, step: int) -> list[str] | None:
        """Confirm the pending authenticator with a code of ``step``: ten new recovery codes, or
        None when there was no pending enrolment left to confirm (a race, or a removal)."""
        now = self.clock()
        codes = recovery.new_codes()
        with self.db.begin(immediate=True) as conn:
            done = conn.execute(
                sa.update(mfa_totp)
                .where(_T.user_id == user_id, _T.confirmed_at.is_(None))
                .values(confirmed_at=now, last_step=step)
            )
            if done.rowcount != 1:
                return None
            conn.execute(sa.delete(mfa_recovery_codes).where(_R.user_id == user_id))
            rows = []
            for code in codes:
                salt = recovery.new_salt()
                letters = recovery.normalise(code)
                assert letters is not None  # made by new_codes
                rows.append(
                    {
                        "id": str(uuid.uuid4()),
                        "user_id": user_id,
                        "salt": salt,
                        "code_hash": recovery.digest(salt, letters),
                        "created_at": now,
                        "used_at": None,
                    }
                )
            conn.execute(mfa_recovery_codes.insert(), rows)
        return codes

    def check_totp(self, user_id: str, code: str) -> bool:
        """A code of the confirmed authenticator, for a step later than any accepted before; the
        step is recorded in the same statement that checks it (a replay finds it taken)."""
        with self.db.begin() as conn:
            row = conn.execute(
                sa.select(mfa_totp).where(_T.user_id == user_id, _T.confirmed_at.is_not(None))
            ).first()
        if row is None:
            return False
        step = totp.matching_step(self._open(row), code, self.clock())
        if step is None:
            return False
        with self.db.begin() as conn:
            done = conn.execute(
                sa.update(mfa_totp)
                .where(
                    _T.user_id == user_id,
                    _T.confirmed_at.is_not(None),
                    sa.or_(_T.last_step.is_(None), _T.last_step < step),
                )
                .values(last_step=step)
            )
        return done.rowcount == 1

    def remove(self, user_id: str) -> bool:
        """Remove the authenticator (pending or confirmed) and every recovery code."""
        with self.db.begin(immediate=True) as conn:
            done = conn.execute(sa.delete(mfa_totp).where(_T.user_id == user_id))
            conn.execute(sa.delete(mfa_recovery_codes).where(_R.user_id == user_id))
        return bool(done.rowcount)

    def versions(self) -> dict[int, int]:
        """Seeds per vault key version (``garrison vault status``)."""
        with self.db.begin() as conn:
            rows = conn.execute(
                sa.select(_T.key_version, sa.func.count()).group_by(_T.key_version)
            ).all()
        return {int(version): int(count) for version, count in rows}

    def rewrap(self) -> tuple[int, list[str]]:
        """Move every seed's data key to the current vault KEK (``garrison vault rewrap``, V3):
        how many moved, and the user ids of seeds that open under no configured key. A row
        rewritten meanwhile (a new enrolment, already current) is left as it is."""
        with self.db.begin() as conn:
            rows = conn.execute(
                sa.select(_T.user_id, _T.key_version, _T.secret).where(
                    _T.key_version != self.keys.current
                )
            ).all()
        moved, failed = 0, []
        for row in rows:
            try:
                blob = envelope.rewrap(self.keys, _ref(row.user_id), row.key_version, row.secret)
            except DecryptError:
                failed.append(row.user_id)
                continue
            with self.db.begin() as conn:
                done = conn.execute(
                    sa.update(mfa_totp)
                    .where(_T.user_id == row.user_id, _T.secret == row.secret)
                    .values(secret=blob, key_version=self.keys.current)
                )
            moved += done.rowcount
        return moved, failed

    def _open(self, row: Any) -> str:
        ref = _ref(row.user_id)
        return envelope.decrypt(self.keys, ref, row.key_version, row.secret, SEED_FIELD).decode()

    # -- recovery codes ------------------------------------------------------------------------
    def use_recovery_code(self, user_id: str, code: str) -> bool:
        """Spend an unused recovery code of the user; False if none matches (or it was spent)."""
        letters = recovery.normalise(code)
        if letters is None:
            return False
        with self.db.begin() as conn:
            rows = conn.execute(
                sa.select(_R.id, _R.salt, _R.code_hash).where(
                    _R.user_id == user_id, _R.used_at.is_(None)
                )
            ).all()
        found = next((r.id for r in rows if recovery.matches(r.salt, r.code_hash, letters)), None)
        if found is None:
            return False
        with self.db.begin() as conn:
            done = conn.execute(
                sa.update(mfa_recovery_codes)
                .where(_R.id == found, _R.used_at.is_(None))
                .values(used_at=self.clock())
            )
        return done.rowcount == 1

    def recovery_codes_left(self, user_id: str) -> int:
        with self.db.begin() as conn:
            count = conn.execute(
                sa.select(sa.func.count())
                .select_from(mfa_recovery_codes)
                .where(_R.user_id == user_id, _R.used_at.is_(None))
            ).scalar_one()
        return int(count)

    # -- logins awaiting a code ----------------------------------------------------------------
    def open_challenge(self, user_id: str, amr: tuple[str, ...], session: str) -> tuple[str, int]:
        """A new ``mfa_token`` for ``user_id`` and its lifetime in seconds."""
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        now = self.clock()
        with self.db.begin() as conn:
            conn.execute(sa.delete(mfa_challenges).where(_C.expires_at < now - CHALLENGE_TTL))
            conn.execute(
                mfa_challenges.insert().values(
                    token_hash=token_hash(token),
                    user_id=user_id,
                    amr=list(amr),
                    session=session,
                    created_at=now,
                    expires_at=now + CHALLENGE_TTL,
                    used_at=None,
                )
            )
        return token, CHALLENGE_TTL

    def challenge(self, token: str) -> Challenge | None:
        """The live (unspent, unexpired) login behind ``token``, or None."""
        if not isinstance(token, str) or not token.startswith(TOKEN_PREFIX):
            return None
        if len(token) > _MAX_TOKEN:
            return None
        with self.db.begin() as conn:
            row = conn.execute(
                sa.select(mfa_challenges).where(_C.token_hash == token_hash(token))
            ).first()
        if row is None or row.used_at is not None or row.expires_at <= self.clock():
            return None
        return Challenge(
            row.token_hash,
            row.user_id,
            tuple(str(m) for m in row.amr),
            row.session,
            row.created_at,
            row.expires_at,
        )

    def spend_challenge(self, challenge: Challenge) -> bool:
        """Mark the login's token used; False if another request spent it first."""
        now = self.clock()
        with self.db.begin() as conn:
            done = conn.execute(
                sa.update(mfa_challenges)
                .where(
                    _C.token_hash == challenge.token_hash,
                    _C.used_at.is_(None),
                    _C.expires_at > now,
                )
                .values(used_at=now)
            )
        return done.rowcount == 1
