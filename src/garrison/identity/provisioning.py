"""Just-in-time users for identities proven elsewhere: external IdP tokens (A10), OIDC logins (A11).

Each outside identity gets one local user row, keyed by ``external_subject = "<source>:<sub>"``
(unique in the schema), so disabling a user or revoking their sessions (A4, A12) works for them
exactly as for password users. The row has no password: it can only be reached through its source.

The first OIDC user becomes admin only if no admin exists (A11). Counting admins and inserting the
row happen in one transaction that holds a lock for the whole decision: SQLite's write lock (taken
at BEGIN IMMEDIATE) or, on PostgreSQL, a transaction-scoped advisory lock, so two first logins
racing each other cannot both see "no admin yet".
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa

from garrison.clock import Clock, system_clock
from garrison.errors import ConflictError, ValidationError
from garrison.identity.users import User, UserStore, validate_email
from garrison.storage.db import ALL_TENANTS, Database
from garrison.storage.schema import users
from garrison.text import check_text

ADMIN_ROLE = "admin"
#: pg_advisory_xact_lock key for "who is the first admin" (any constant; "garrison" in ASCII).
BOOTSTRAP_LOCK_KEY = 0x6761727269736F6E
_UNSAFE = re.compile(r"[^a-z0-9._@-]")
_ROLE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


def external_username(source: str, sub: str) -> str:
    """A readable, valid, stable username: ``<source>.<sub>``, with a digest when ``sub`` had to be
    changed to fit (so two different subjects never map to one name)."""
    wanted = f"{source}.{sub}".lower()
    safe = _UNSAFE.sub("-", wanted).lstrip("._@-")[:150]
    if safe == f"{source}.{sub}" and safe:
        return safe
    digest = hashlib.sha256(f"{source}:{sub}".encode()).hexdigest()[:16]
    return f"{safe[:130] or 'ext'}.{digest}"


def usable_email(email: object) -> str | None:
    """An identity's email claim when it is an address Garrison stores (``validate_email``)."""
    if not isinstance(email, str):
        return None
    try:
        return validate_email(email)
    except ValidationError:
        return None


@dataclass(eq=False, repr=False)
class Provisioner:
    db: Database
    users: UserStore
    clock: Clock = system_clock

    def ensure(
        self,
        source: str,
        sub: str,
        *,
        email: str | None,
        roles: Sequence[str],
        tenant: str | None = None,
        bootstrap_admin: bool = False,
    ) -> tuple[User, bool]:
        """The user for ``source:sub``, created on first sight; (user, created). A ``sub`` that
        no user row may hold (a control character, E7) is a 422: the token decoder refuses such
        claims first, so this is the last line for any other source of identities."""
        subject = check_text("sub", f"{source}:{sub}", max_length=400)
        found = self.users.find_external(subject)
        if found is not None:
            return found, False
        try:
            user_id = self._create(subject, source, sub, email, roles, tenant, bootstrap_admin)
        except sa.exc.IntegrityError:
            found = self.users.find_external(subject)  # a concurrent first sight won the race
            if found is None:
                raise ConflictError(
                    f"username {external_username(source, sub)!r} is taken by another user"
                ) from None
            return found, False
        return self.users.get(user_id), True

    def _create(
        self,
        subject: str,
        source: str,
        sub: str,
        email: str | None,
        roles: Sequence[str],
        tenant: str | None,
        bootstrap_admin: bool,
    ) -> str:
        granted = {role for role in roles if _ROLE.fullmatch(role)}
        now = self.clock()
        user_id = str(uuid.uuid4())
        with self.db.begin(tenant=ALL_TENANTS, immediate=True) as conn:
            if bootstrap_admin:
                if self.db.is_postgres:
                    conn.execute(sa.select(sa.func.pg_advisory_xact_lock(BOOTSTRAP_LOCK_KEY)))
                if not _any_admin(conn):
                    granted.add(ADMIN_ROLE)
            conn.execute(
                users.insert().values(
                    id=user_id,
                    username=external_username(source, sub),
                    **self.users.email_columns(user_id, usable_email(email)),  # sealed (V2)
                    password_hash=None,
                    roles=sorted(granted),
                    tenant=tenant,
                    active=True,
                    external_subject=subject,
                    created_at=now,
                    updated_at=now,
                    tokens_valid_after=0.0,
                )
            )
        return user_id


def _any_admin(conn: sa.Connection) -> bool:
    """Is there any admin, active or not? (A disabled admin still means an operator exists:
    disabling the only admin must not hand the platform to the next stranger who signs in.)"""
    return any(
        ADMIN_ROLE in (roles or ()) for roles in conn.execute(sa.select(users.c.roles)).scalars()
    )
