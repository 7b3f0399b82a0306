"""The administrative actions, one function each, called alike by the CLI and the HTTP routes.

Each takes the ``Admission`` of whoever acts (an admitted HTTP caller, or the CLI's local
operator from ``Pipeline.operator``) and then, in this order: asks the policy about the record it
acts on (``Pipeline.authorize``: the tenant of the user or key, a platform record; a deny is
audited there), does the work through the domain stores (each store publishes its own
invalidation once, on every replica), and writes one audit record of the change. Nothing here
knows HTTP or the terminal: errors are ``GarrisonError`` subclasses, results are values.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import anyio.to_thread

from garrison.admission import Admission, Pipeline
from garrison.admission.refusals import credential_of
from garrison.audit.event import AuditEvent, AuditSink
from garrison.clock import Clock
from garrison.errors import AuthenticationError, ConflictError, ValidationError
from garrison.identity.apikeys import ApiKey, ApiKeyStore, parse_duration
from garrison.identity.password_policy import temporary_password
from garrison.identity.users import Revoked, User, UserStore, validate_tenant
from garrison.keys.keyring import KeyInfo, Keyring
from garrison.policy import Resource
from garrison.principal import Principal
from garrison.privacy import ErasureReport, erase_user, export_user
from garrison.storage.bus import InvalidationBus
from garrison.storage.db import Database
from garrison.text import check_text

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Rotation:
    kid: str
    emergency: bool
    keys: list[dict[str, Any]]


def user_resource(user: User) -> Resource:
    """A user record as the policy sees it: tenant-tagged, or a platform record."""
    return Resource(type="user", id=user.id, tenant=user.tenant, platform=user.tenant is None)


#: the self-service action of the caller's own API keys (``own_actions.toml``)
OWN_KEYS = "auth.api_keys"


def _own_key(owner: str, tenant: str | None, key_id: str | None = None) -> Resource:
    """An API key as the policy sees it: its owner (the ``owner`` rule) and its tenant."""
    return Resource(type="api_key", id=key_id, tenant=tenant, platform=tenant is None, owner=owner)


def _who(actor: Admission) -> Principal:
    if actor.principal is None:  # a self-service action needs an authenticated caller
        raise AuthenticationError("sign in first")
    return actor.principal


@dataclass(eq=False, repr=False, kw_only=True)
class AdminActions:
    pipeline: Pipeline
    users: UserStore
    api_keys: ApiKeyStore
    keyring: Keyring
    audit: AuditSink
    known_roles: Callable[[], frozenset[str]]
    # one database, bus and clock: the users store's
    db: Database = field(init=False)
    bus: InvalidationBus = field(init=False)
    clock: Clock = field(init=False)

    def __post_init__(self) -> None:
        self.db = self.users.db
        self.bus = self.users.bus
        self.clock = self.users.clock

    # -- users -----------------------------------------------------------------------------------
    async def list_users(
        self, actor: Admission, *, tenant: str | None = None, all_tenants: bool = False
    ) -> list[User]:
        """Users of the tenant the actor acts in (T3); the CLI's operator may name any."""
        await self._allowed(actor, "admin.users.list")
        scope = actor.tenant if actor.credential != "cli" else tenant
        every = all_tenants and actor.credential == "cli"
        return await _run(lambda: self.users.list(scope, all_tenants=every, limit=10_000))

    async def create_user(
        self,
        actor: Admission,
        *,
        username: str,
        password: str,
        email: str | None = None,
        roles: tuple[str, ...] = ("user",),
        tenant: str | None = None,
        change_required: bool = True,
    ) -> User:
        """A user in the actor's tenant, or (a platform admin) in the tenant it names. The
        password is the administrator's choice: the user must change it at first login (A15),
        unless the CLI's operator says it is the user's own (``change_required=False``)."""
        self._check_roles(roles)
        target = validate_tenant(tenant) if tenant else actor.tenant
        acting = target if actor.tenant is None else actor.tenant  # a platform admin names it
        resource = Resource(type="user", tenant=target, platform=target is None)
        await self.pipeline.authorize(actor, "admin.users.create", resource=resource, tenant=acting)
        user = await _run(
            lambda: self.users.create(
                username,
                password,
                email=email,
                roles=roles,
                tenant=target,
                change_required=change_required,
            )
        )
        await self._audit(
            actor, "admin.user.create", tenant=target, user_id=user.id, username=user.username
        )
        return user

    async def update_user(
        self,
        actor: Admission,
        ref: str,
        *,
        active: bool | None = None,
        roles: tuple[str, ...] | None = None,
    ) -> User:
        """Enable, disable (everything the user holds is revoked) or set roles; the last active
        platform admin is never disabled or demoted (409)."""
        if active is None and roles is None:
            raise ValidationError("nothing to change", reasons=["body: give active or roles"])
        if roles is not None:
            self._check_roles(roles)
        user = await self._target(actor, "admin.users.update", ref)
        updated = await _run(
            lambda: self.users.update(user.id, active=active, roles=roles, keep_platform_admin=True)
        )
        if active is not None:
            word = "enable" if active else "disable"
            await self._audit(actor, f"admin.user.{word}", tenant=user.tenant, user_id=user.id)
        if roles is not None:
            await self._audit(
                actor,
                "admin.user.set_roles",
                tenant=user.tenant,
                user_id=user.id,
                roles=list(updated.roles),
                previous=list(user.roles),
            )
        return updated

    async def revoke_sessions(self, actor: Admission, ref: str) -> tuple[User, Revoked]:
        """Every refresh family, access token, cookie session and API key of the user (A12)."""
        user = await self._target(actor, "admin.users.revoke_sessions", ref)
        revoked = await _run(lambda: self.users.revoke_all(user.id))
        await self._audit(
            actor,
            "admin.user.revoke_sessions",
            tenant=user.tenant,
            user_id=user.id,
            families=revoked.sessions,
            api_keys=revoked.api_keys,
        )
        return user, revoked

    async def reset_password(self, actor: Admission, ref: str) -> tuple[User, str, int]:
        """A random temporary password for the user, shown once to the administrator, which
        must be changed at the next login (A15); every session and access token of the user
        ends (API keys stay: they are not sessions). Returns the user, the password and the
        number of sessions ended."""
        user = await self._target(actor, "admin.users.reset_password", ref)
        if user.password_hash is None:
            raise ConflictError(
                "the account signs in through an identity provider, without a password",
                reasons=["no Garrison password to reset"],
            )
        policy = self.users.policy
        temporary = temporary_password(policy, username=user.username, email=user.email)
        ended = await _run(
            lambda: self.users.set_password(user.id, temporary, change_required=True)
        )
        await self._audit(
            actor,
            "admin.user.reset_password",
            tenant=user.tenant,
            user_id=user.id,
            ended_sessions=ended,
        )
        return user, temporary, ended

    async def export_user(self, actor: Admission, ref: str) -> tuple[User, dict[str, Any]]:
        """Everything Garrison holds about a user (V4); audited with counts, never content."""
        user = await self._target(actor, "admin.users.export", ref)
        document = await _run(
            lambda: export_user(self.db, user.id, now=self.clock(), email_of=self.users.email_of)
        )
        counts = {
            name: len(document[name])
            for name in ("sessions", "api_keys", "vault_secrets_created", "audit_records")
        }
        await self._audit(
            actor, "admin.user.export", tenant=user.tenant, user_id=user.id, counts=counts
        )
        return user, document

    async def delete_user(self, actor: Admission, ref: str, *, reason: str) -> ErasureReport:
        """Erase a user with their sessions and API keys (V4); the reason is audited."""
        check_text("reason", reason, tab=True, max_length=400)
        user = await self._target(actor, "admin.users.delete", ref, params={"reason": reason})
        report = await _run(lambda: erase_user(self.db, self.bus, user.id))
        await self._audit(
            actor,
            "admin.user.delete",
            tenant=user.tenant,
            user_id=user.id,
            reason=reason.strip()[:400],
            sessions=report.sessions,
            api_keys=report.api_keys,
        )
        return report

    # -- API keys --------------------------------------------------------------------------------
    async def create_api_key(
        self,
        actor: Admission,
        owner_ref: str,
        *,
        scopes: tuple[str, ...],
        name: str = "",
        expires_in: str | None = None,
    ) -> tuple[str, ApiKey]:
        """A key for a user of the actor's tenant; the secret is returned this once.
        ``expires_in``: a duration such as ``90d`` or ``12h``."""
        seconds = parse_duration(expires_in) if expires_in else None
        owner = await self._target(actor, "admin.api_keys.create", owner_ref)
        secret, key = await _run(
            lambda: self.api_keys.create(
                owner.id, scopes, tenant=owner.tenant, name=name, expires_in=seconds
            )
        )
        await self._audit(
            actor, "admin.api_key.create", tenant=owner.tenant, key_id=key.id, user_id=owner.id
        )
        return secret, key

    async def list_api_keys(self, actor: Admission, owner_ref: str) -> tuple[User, list[ApiKey]]:
        owner = await self._target(actor, "admin.api_keys.list", owner_ref)
        return owner, await _run(lambda: self.api_keys.list_for(owner.id))

    async def revoke_api_key(self, actor: Admission, key_id: str) -> ApiKey:
        key = await _run(lambda: self.api_keys.get(key_id))
        resource = Resource(
            type="api_key", id=key.id, tenant=key.tenant, platform=key.tenant is None
        )
        await self.pipeline.authorize(actor, "admin.api_keys.revoke", resource=resource)
        revoked = await _run(lambda: self.api_keys.revoke(key.id))
        await self._audit(actor, "admin.api_key.revoke", tenant=key.tenant, key_id=key.id)
        return revoked

    # -- the caller's own API keys (self-service: ``auth.api_keys``) -------------------------------
    async def own_api_keys(self, actor: Admission) -> list[ApiKey]:
        """The caller's own keys, when the policy lets its role hold keys at all."""
        who = _who(actor)
        await self.pipeline.authorize(actor, OWN_KEYS, resource=_own_key(who.sub, who.tenant))
        return await _run(lambda: self.api_keys.list_for(who.sub))

    async def create_own_api_key(
        self, actor: Admission, *, scopes: tuple[str, ...], name: str = "", expires_in: str | None
    ) -> tuple[str, ApiKey]:
        """A key for the caller itself, in its own tenant; the secret is returned this once."""
        who = _who(actor)
        seconds = parse_duration(expires_in) if expires_in else None
        await self.pipeline.authorize(actor, OWN_KEYS, resource=_own_key(who.sub, who.tenant))
        secret, key = await _run(
            lambda: self.api_keys.create(
                who.sub, scopes, tenant=who.tenant, name=name, expires_in=seconds
            )
        )
        await self._audit(
            actor, "auth.api_key_create", tenant=who.tenant, key_id=key.id, user_id=who.sub
        )
        return secret, key

    async def revoke_own_api_key(self, actor: Admission, key_id: str) -> ApiKey:
        """Revoke one of the caller's keys: the policy refuses another owner's (``owner``)."""
        key = await _run(lambda: self.api_keys.get(key_id))
        resource = _own_key(key.user_id, key.tenant, key.id)
        await self.pipeline.authorize(actor, OWN_KEYS, resource=resource)
        revoked = await _run(lambda: self.api_keys.revoke(key.id))
        await self._audit(actor, "auth.api_key_revoke", tenant=key.tenant, key_id=key.id)
        return revoked

    # -- signing keys ----------------------------------------------------------------------------
    async def rotate_keys(self, actor: Admission, *, emergency: bool = False) -> Rotation:
        """A new signing key (A6); an emergency rotation revokes every older one at once."""
        await self._allowed(actor, "admin.keys.rotate")
        kid = await _run(lambda: self.keyring.rotate(emergency=emergency))
        self.bus.publish("keys", kid)
        await self._audit(actor, "admin.keys.rotate", kid=kid, emergency=emergency)
        keys = await _run(self.key_list)
        return Rotation(kid, emergency, keys)

    async def list_keys(self, actor: Admission) -> list[KeyInfo]:
        """The signing keys with their status and dates (the console's page; A6)."""
        await self._allowed(actor, "admin.keys.list")
        return await _run(self.keyring.list)

    def key_list(self) -> list[dict[str, Any]]:
        return [
            {"kid": k.kid, "alg": k.alg, "status": k.status, "created_at": k.created_at}
            for k in self.keyring.list()
        ]

    # -- shared ----------------------------------------------------------------------------------
    async def _allowed(self, actor: Admission, action: str) -> None:
        await self.pipeline.authorize(actor, action)

    async def _target(
        self, actor: Admission, action: str, ref: str, *, params: Mapping[str, Any] | None = None
    ) -> User:
        """The user ``ref`` names (id or username), once the policy allows ``action`` on it for
        this actor: a record of another tenant is refused like any other deny."""
        user = await _run(lambda: self.users.resolve(ref))
        await self.pipeline.authorize(actor, action, resource=user_resource(user), params=params)
        return user

    def _check_roles(self, roles: tuple[str, ...]) -> None:
        known = self.known_roles()
        unknown = sorted({r for r in roles if r not in known})
        if unknown:
            raise ValidationError(
                "unknown role", reasons=[f"roles: {r!r} is not a defined role" for r in unknown]
            )

    async def _audit(
        self,
        actor: Admission,
        action: str,
        *,
        tenant: str | None = None,
        reason: str | None = None,
        **details: Any,
    ) -> None:
        attempt = actor.attempt
        credential = credential_of(actor.principal, actor.credential)
        await self.audit.record(
            AuditEvent(
                action=action,
                outcome="success",
                actor=actor.actor,
                tenant=tenant if tenant is not None else actor.tenant,
                ip=attempt.ip if attempt else None,
                user_agent=attempt.user_agent if attempt else None,
                request_id=attempt.request_id if attempt else None,
                reason=reason,
                details={**details, "authenticated_by": credential},
            )
        )


async def _run(work: Callable[[], T]) -> T:
    """Blocking store calls run in a worker thread, off the event loop."""
    return await anyio.to_thread.run_sync(work)
