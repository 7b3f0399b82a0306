"""Users (A1, A4, A12): create, find, disable, revoke sessions. Storage via SQLAlchemy Core.

The email is encrypted at rest (V2): ``garrison.vault.emails`` seals it under the vault's key and
gives the keyed blind index that ``find_by_email`` looks up; nothing here writes a plaintext
address. ``seal_plaintext_emails`` encrypts rows that still hold one (those of before revision
0005, or written by an older replica during a rolling upgrade), and ``rewrap_emails`` moves every
address to the current vault key (``garrison vault rewrap``).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Sequence
from dataclasses import KW_ONLY, dataclass, field
from typing import Any

import sqlalchemy as sa

from garrison.clock import Clock, system_clock
from garrison.errors import ConfigError, ConflictError, NotFoundError, ValidationError
from garrison.identity.password_policy import PasswordPolicy
from garrison.identity.passwords import hash_password
from garrison.plain import fields_dict
from garrison.storage.bus import InvalidationBus
from garrison.storage.db import ALL_TENANTS, Database
from garrison.storage.schema import api_keys, refresh_families, users
from garrison.text import check_text, control_character
from garrison.vault.emails import NO_EMAIL, EmailCipher
from garrison.vault.errors import DecryptError

USERNAME_RE = re.compile(r"^[a-z0-9][a-z0-9._@-]{0,149}$")
ROLE_RE = re.compile(r"[a-z][a-z0-9_]{0,63}")
PLATFORM_ADMIN = "admin"


@dataclass(frozen=True, slots=True)
class Revoked:
    """What one revocation ended: refresh families (sessions) and API keys."""

    sessions: int
    api_keys: int


def _checked_roles(roles: tuple[str, ...]) -> tuple[str, ...]:
    for role in roles:
        if not ROLE_RE.fullmatch(check_text("role", role)):
            raise ValidationError(f"role {role!r}: lower-case letters, digits and '_' only")
    return roles


TENANT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


@dataclass(frozen=True, slots=True)
class User:
    id: str
    username: str
    email: str | None
    roles: tuple[str, ...]
    tenant: str | None
    active: bool
    created_at: float
    tokens_valid_after: float
    password_hash: str | None = None
    password_change_required: bool = False  # an administrator set the password (A15)

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "username": self.username,
            "email": self.email,
            "roles": list(self.roles),
            "tenant": self.tenant,
            "active": self.active,
            "created_at": self.created_at,
        }


@dataclass(slots=True)
class EmailRewrapReport:
    """What ``rewrap_emails`` did: addresses moved to the current key, plaintext ones sealed."""

    current_version: int
    pending: int  # encrypted addresses not under the current key when the run started
    rewrapped: int = 0
    sealed: int = 0  # plaintext addresses encrypted on the way
    skipped: int = 0  # rewritten meanwhile (already current)
    failed: list[str] = field(default_factory=list)  # ids of users whose address does not open

    def as_dict(self) -> dict[str, Any]:
        return fields_dict(self)


def _user(row: Any, email: str | None) -> User:
    return User(
        id=row.id,
        username=row.username,
        email=email,
        roles=tuple(row.roles or ()),
        tenant=row.tenant,
        active=bool(row.active),
        created_at=row.created_at,
        tokens_valid_after=row.tokens_valid_after or 0.0,
        password_hash=row.password_hash,
        password_change_required=bool(row.password_change_required),
    )


def normalise_username(username: str) -> str:
    return username.strip().lower()


def validate_email(email: str) -> str:
    """An email address as Garrison stores it: at most 320 characters, no control character or
    white space, a non-empty local part and domain around the last ``@``; else 422."""
    local, _, domain = check_text("email", email, max_length=320).rpartition("@")
    if not local or not domain or any(c.isspace() for c in email):
        raise ValidationError("email: not an email address", reasons=["email: not an address"])
    return email


def validate_tenant(tenant: str | None) -> str | None:
    if tenant is None or tenant == "":
        return None
    # fullmatch: ``$`` alone would let a trailing newline through
    if not TENANT_RE.fullmatch(check_text("tenant", tenant)):
        raise ValidationError("tenant: letters, digits, '.', '_' and '-' only (at most 100)")
    return tenant


@dataclass(eq=False, repr=False)
class UserStore:
    db: Database
    bus: InvalidationBus
    clock: Clock = system_clock
    #: every password set here passes it (A15)
    policy: PasswordPolicy = field(default_factory=PasswordPolicy)
    _: KW_ONLY
    #: seals and opens the email column (V2); None: users without an email only
    emails: EmailCipher | None = None

    # -- the encrypted email (V2) ----------------------------------------------------------------
    def email_columns(self, user_id: str, email: str | None) -> dict[str, object]:
        """The stored columns for ``email`` in the row of ``user_id``: never a plaintext."""
        if email is None:
            return dict(NO_EMAIL)
        if self.emails is None:
            raise ConfigError(["SECRET_ENCRYPTION_KEY: needed to store an email (encrypted, V2)"])
        return self.emails.seal(user_id, email).columns()

    def email_of(self, row: Any) -> str | None:
        """The address of a ``users`` row; ``DecryptError`` when it does not open."""
        if row.email_ciphertext is not None:
            if self.emails is None:
                raise DecryptError()
            return self.emails.open(row.id, row.email_key_version, row.email_ciphertext)
        legacy: str | None = row.email  # not sealed yet (``seal_plaintext_emails``); normally None
        return legacy

    def _user(self, row: Any) -> User:
        return _user(row, self.email_of(row))

    def find_by_email(self, email: str, *, limit: int = 100) -> list[User]:
        """Users with this address (any letter case), every tenant, by the blind index."""
        if self.emails is None or "\x00" in email or not email.strip():
            return []
        wanted = self.emails.index_values(email)
        stmt = (
            sa.select(users)
            .where(users.c.email_index.in_(wanted))
            .order_by(users.c.created_at)
            .limit(limit)
        )
        with self.db.begin(tenant=ALL_TENANTS) as conn:
            return [self._user(r) for r in conn.execute(stmt)]

    def has_plaintext_emails(self) -> bool:
        with self.db.begin(tenant=ALL_TENANTS) as conn:
            found = conn.execute(
                sa.select(users.c.id).where(users.c.email.is_not(None)).limit(1)
            ).first()
        return found is not None

    def seal_plaintext_emails(
        self, *, batch_size: int = 500, progress: Callable[[int], None] | None = None
    ) -> int:
        """Encrypt every address still stored in plaintext and empty that column, in batches of
        committed transactions (online: a row changed meanwhile is left for the next run).
        Returns the number sealed."""
        if batch_size < 1:
            raise ValidationError("batch size: at least 1")
        done, after = 0, ""
        while True:
            with self.db.begin(tenant=ALL_TENANTS) as conn:
                rows = conn.execute(
                    sa.select(users.c.id, users.c.email)
                    .where(users.c.email.is_not(None), users.c.id > after)
                    .order_by(users.c.id)
                    .limit(batch_size)
                ).all()
            if not rows:
                return done
            after = rows[-1].id
            if self.emails is None:
                raise ConfigError(["SECRET_ENCRYPTION_KEY: needed to encrypt stored emails (V2)"])
            sealed = [(r, self.emails.seal(r.id, r.email)) for r in rows]
            done += self._write_sealed(sealed)
            if progress is not None:
                progress(len(rows))

    def _write_sealed(self, sealed: Sequence[tuple[Any, Any]]) -> int:
        count = 0
        with self.db.begin(tenant=ALL_TENANTS, immediate=True) as conn:
            for row, columns in sealed:
                result = conn.execute(
                    sa.update(users)
                    .where(users.c.id == row.id, users.c.email == row.email)
                    .values(columns.columns())
                )
                count += int(result.rowcount or 0)
        return count

    def email_versions(self) -> dict[int, int]:
        """Encrypted addresses per key version (``garrison vault status``)."""
        with self.db.begin(tenant=ALL_TENANTS) as conn:
            rows = conn.execute(
                sa.select(users.c.email_key_version, sa.func.count())
                .where(users.c.email_ciphertext.is_not(None))
                .group_by(users.c.email_key_version)
            ).all()
        return {int(version): int(count) for version, count in rows}

    def rewrap_emails(
        self, *, batch_size: int = 200, progress: Callable[[int], None] | None = None
    ) -> EmailRewrapReport:
        """Every address under the current vault key and index key, online, in batches; plaintext
        addresses left by an older replica are sealed first."""
        if self.emails is None:
            raise ConfigError(["SECRET_ENCRYPTION_KEY: needed to re-wrap stored emails (V2)"])
        cipher = self.emails
        sealed = self.seal_plaintext_emails(batch_size=batch_size)
        stale = sa.and_(
            users.c.email_ciphertext.is_not(None),
            users.c.email_key_version != cipher.keys.current,
        )
        with self.db.begin(tenant=ALL_TENANTS) as conn:
            pending = conn.execute(
                sa.select(sa.func.count()).select_from(users).where(stale)
            ).scalar_one()
        report = EmailRewrapReport(cipher.keys.current, int(pending), sealed=sealed)
        after = ""
        while True:
            with self.db.begin(tenant=ALL_TENANTS) as conn:
                rows = conn.execute(
                    sa.select(users.c.id, users.c.email_key_version, users.c.email_ciphertext)
                    .where(stale, users.c.id > after)
                    .order_by(users.c.id)
                    .limit(batch_size)
                ).all()
            if not rows:
                return report
            after = rows[-1].id
            fresh = []
            for row in rows:
                try:
                    fresh.append(
                        (row, cipher.rewrap(row.id, row.email_key_version, row.email_ciphertext))
                    )
                except DecryptError:
                    report.failed.append(row.id)
            with self.db.begin(tenant=ALL_TENANTS, immediate=True) as conn:
                for row, columns in fresh:
                    result = conn.execute(
                        sa.update(users)
                        .where(
                            users.c.id == row.id,
                            users.c.email_key_version == row.email_key_version,
                            users.c.email_ciphertext == row.email_ciphertext,
                        )
                        .values(columns.columns())
                    )
                    if result.rowcount:
                        report.rewrapped += 1
                    else:
                        report.skipped += 1
            if progress is not None:
                progress(len(rows))

    def create(
        self,
        username: str,
        password: str | None,
        *,
        email: str | None = None,
        roles: tuple[str, ...] = ("user",),
        tenant: str | None = None,
        external_subject: str | None = None,
        change_required: bool = False,
    ) -> User:
        """``change_required``: an administrator chose the password; the user must change it
        before doing anything else (A15)."""
        name = normalise_username(check_text("username", username))
        if not USERNAME_RE.fullmatch(name):
            raise ValidationError(
                "username: 1-150 characters of a-z, 0-9, '.', '_', '@' or '-', starting alphanumeric"
            )
        if email is not None:
            validate_email(email)
        if external_subject is not None:
            check_text("external subject", external_subject, max_length=400)
        _checked_roles(roles)
        tenant = validate_tenant(tenant)
        if password is not None:
            self.policy.check(password, username=name, email=email)
        pw_hash = hash_password(password) if password is not None else None
        now = self.clock()
        user_id = str(uuid.uuid4())
        try:
            with self.db.begin(tenant=tenant or ALL_TENANTS) as conn:
                conn.execute(
                    users.insert().values(
                        id=user_id,
                        username=name,
                        **self.email_columns(user_id, email),
                        password_hash=pw_hash,
                        roles=sorted(set(roles)),
                        tenant=tenant,
                        active=True,
                        external_subject=external_subject,
                        created_at=now,
                        updated_at=now,
                        tokens_valid_after=0.0,
                        password_change_required=change_required and password is not None,
                    )
                )
        except sa.exc.IntegrityError:
            raise ConflictError(f"user {name!r} already exists") from None
        return self.get(user_id)

    def get(self, user_id: str) -> User:
        user = None if control_character(user_id) else self._one(users.c.id == user_id)
        if user is None:
            raise NotFoundError("no such user")
        return user

    def find(self, username: str) -> User | None:
        name = normalise_username(username)
        if control_character(name):  # no user has such a name (PostgreSQL refuses NUL: a 500)
            return None
        return self._one(users.c.username == name)

    def find_external(self, subject: str) -> User | None:
        if control_character(subject):
            return None
        return self._one(users.c.external_subject == subject)

    def resolve(self, ref: str) -> User:
        """A user by id or username (CLI convenience)."""
        user = None if control_character(ref) else self._one(users.c.id == ref) or self.find(ref)
        if user is None:
            raise NotFoundError(f"no user {ref!r}")
        return user

    def _one(self, where: Any) -> User | None:
        with self.db.begin() as conn:
            row = conn.execute(sa.select(users).where(where)).first()
        return self._user(row) if row else None

    def list(
        self, tenant: str | None, *, all_tenants: bool = False, limit: int = 100
    ) -> list[User]:
        """Users of ``tenant``; without a tenant only unscoped (platform) users (T3)."""
        stmt = sa.select(users).order_by(users.c.created_at).limit(limit)
        if not all_tenants:
            stmt = stmt.where(users.c.tenant == tenant if tenant else users.c.tenant.is_(None))
        with self.db.begin(tenant=ALL_TENANTS if all_tenants else tenant) as conn:
            return [self._user(r) for r in conn.execute(stmt)]

    def count_admins(self) -> int:
        with self.db.begin() as conn:
            rows = conn.execute(sa.select(users.c.roles)).all()
        return sum(1 for (roles,) in rows if "admin" in (roles or ()))

    def set_active(self, user_id: str, active: bool) -> User:
        """Enable or disable. Disabling revokes everything the user holds (``revoke_all``), so
        enabling again never revives a session, token or API key (A12)."""
        return self.update(user_id, active=active)

    def update(
        self,
        user_id: str,
        *,
        active: bool | None = None,
        roles: tuple[str, ...] | None = None,
        keep_platform_admin: bool = False,
    ) -> User:
        """Change ``active`` and/or ``roles`` in one transaction. ``keep_platform_admin``: refuse
        (409) a change that would leave no active platform admin (a user without a tenant holding
        ``admin``); the admins' rows are locked first, so two such changes cannot both pass."""
        now = self.clock()
        values: dict[str, Any] = {"updated_at": now}
        if active is not None:
            values["active"] = active
        if roles is not None:
            values["roles"] = sorted(set(_checked_roles(roles)))
        if active is False:
            values["tokens_valid_after"] = now
        with self.db.begin() as conn:
            if keep_platform_admin:
                self._keep_platform_admin(conn, user_id, active, roles)
            found = conn.execute(sa.update(users).where(users.c.id == user_id).values(values))
            if found.rowcount == 0:
                raise NotFoundError("no such user")
            if active is False:
                self._revoke_everything(conn, user_id, now, "user_disabled")
        self.bus.publish("user", user_id)
        return self.get(user_id)

    def revoke_sessions(self, user_id: str) -> int:
        """Revoke every session and token of a user (A12); the number of refresh families."""
        return self.revoke_all(user_id).sessions

    def revoke_all(self, user_id: str) -> Revoked:
        """Kill every refresh family (and so every cookie session), every access token issued so
        far and every API key of the user, in one transaction and one invalidation (A12)."""
        now = self.clock()
        with self.db.begin() as conn:
            found = conn.execute(
                sa.update(users)
                .where(users.c.id == user_id)
                .values(tokens_valid_after=now, updated_at=now)
            )
            if found.rowcount == 0:
                raise NotFoundError("no such user")
            revoked = self._revoke_everything(conn, user_id, now, "sessions_revoked")
        self.bus.publish("user", user_id)
        return revoked

    def _keep_platform_admin(
        self,
        conn: sa.Connection,
        user_id: str,
        active: bool | None,
        roles: tuple[str, ...] | None,
    ) -> None:
        stmt = sa.select(users.c.id, users.c.roles).where(
            users.c.tenant.is_(None), users.c.active.is_(True)
        )
        if conn.dialect.name == "postgresql":
            stmt = stmt.with_for_update()
        admins = {row.id for row in conn.execute(stmt) if PLATFORM_ADMIN in (row.roles or ())}
        if user_id not in admins:
            return
        loses = active is False or (roles is not None and PLATFORM_ADMIN not in roles)
        if loses and len(admins) == 1:
            raise ConflictError(
                "the last active platform admin cannot be disabled, demoted or deleted",
                reasons=["last platform admin"],
            )

    def _revoke_everything(
        self, conn: sa.Connection, user_id: str, now: float, reason: str
    ) -> Revoked:
        sessions = self._revoke_families(conn, user_id, now, reason)
        keys = conn.execute(
            sa.update(api_keys)
            .where(api_keys.c.user_id == user_id, api_keys.c.revoked_at.is_(None))
            .values(revoked_at=now)
        )
        return Revoked(sessions=sessions, api_keys=int(keys.rowcount or 0))

    def set_password(
        self,
        user_id: str,
        password: str,
        *,
        change_required: bool = False,
        keep_session: str | None = None,
    ) -> int:
        """A new password (checked against the policy, A15) and the end of the user's sessions,
        in one transaction; the number of sessions ended.

        Without ``keep_session`` (an administrator's reset) every refresh family ends and every
        access token issued so far dies (``tokens_valid_after``). With it (the user's own change)
        every family but that one ends; their access tokens die with them (each carries its
        family's ``sid``), and ``tokens_valid_after`` stays, so the current session lives on.
        ``change_required``: the new password must be changed at the next login.
        """
        user = self.get(user_id)
        self.policy.check(password, username=user.username, email=user.email)
        pw_hash = hash_password(password)
        now = self.clock()
        values: dict[str, Any] = {
            "password_hash": pw_hash,
            "password_change_required": change_required,
            "updated_at": now,
        }
        if keep_session is None:
            values["tokens_valid_after"] = now
        reason = "password_reset" if keep_session is None else "password_changed"
        with self.db.begin() as conn:
            conn.execute(sa.update(users).where(users.c.id == user_id).values(values))
            stmt = sa.update(refresh_families).where(
                refresh_families.c.user_id == user_id, refresh_families.c.revoked_at.is_(None)
            )
            if keep_session is not None:
                stmt = stmt.where(refresh_families.c.id != keep_session)
            ended = conn.execute(stmt.values(revoked_at=now, revoked_reason=reason))
        self.bus.publish("user", user_id)
        return int(ended.rowcount or 0)

    def rehash(self, user_id: str, old_hash: str, new_hash: str) -> bool:
        """Store ``new_hash`` (the same password under the current argon2 parameters) unless the
        password changed meanwhile; True when stored."""
        with self.db.begin() as conn:
            done = conn.execute(
                sa.update(users)
                .where(users.c.id == user_id, users.c.password_hash == old_hash)
                .values(password_hash=new_hash)
            )
        return bool(done.rowcount)

    @staticmethod
    def _revoke_families(conn: sa.Connection, user_id: str, now: float, reason: str) -> int:
        result = conn.execute(
            sa.update(refresh_families)
            .where(refresh_families.c.user_id == user_id, refresh_families.c.revoked_at.is_(None))
            .values(revoked_at=now, revoked_reason=reason)
        )
        return int(result.rowcount or 0)
