"""Login, refresh and logout (A1, A5, A13): the flows, their throttles and their audit records.

Failures look alike whether or not the account exists: the same error, and an argon2 verify
either way. The login throttle (``garrison.ratelimit.failures``) counts only failures: it locks
the (account, address) pair with a growing backoff, so a third party's guesses do not lock the user
out; an account-wide ceiling bounds guessing from many addresses, and reaching it is audited as
``auth.lockout``; a per-address budget stops spraying across accounts. Throttled attempts get 429
with the seconds to wait, the same answer for a missing account. An attempt holds its slots while
its password is checked (a success gives them back), so guesses sent in parallel cannot outrun a
budget. A limiter that cannot be reached fails closed (503).

Logout revokes the caller's own session, and the family of a refresh token in the body only if that
token belongs to the caller: another user's token is ignored (and noted in the audit record), so
holding a copy of someone's refresh token is not a way to end their session.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from garrison.audit.event import AuditEvent, AuditSink, Outcome
from garrison.errors import (
    AuthenticationError,
    RateLimitedError,
    RefreshReuseError,
    ThrottledError,
)
from garrison.identity.passwords import HASHER, needs_rehash, verify_password
from garrison.identity.sessions import Seen, SessionStore
from garrison.identity.users import USERNAME_RE, User, UserStore, normalise_username
from garrison.ratelimit.failures import FailureThrottle, Lockout
from garrison.ratelimit.limiter import Limiter
from garrison.tokens.jwt import TokenCodec

BAD_CREDENTIALS = "invalid username or password"


@dataclass(frozen=True, slots=True)
class Throttle:
    login: FailureThrottle
    refresh_per_ip: int
    window: int


@dataclass(frozen=True, slots=True)
class Client:
    """Where a request came from: what every audit record of it carries (L3)."""

    ip: str | None = None
    user_agent: str | None = None
    request_id: str | None = None

    def event(
        self,
        action: str,
        outcome: Outcome,
        *,
        actor: str | None = None,
        tenant: str | None = None,
        reason: str | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> AuditEvent:
        return AuditEvent(
            action=action,
            outcome=outcome,
            actor=actor,
            tenant=tenant,
            ip=self.ip,
            user_agent=self.user_agent,
            reason=reason,
            request_id=self.request_id,
            details=details or {},
        )


@dataclass(frozen=True, slots=True)
class TokenPair:
    access_token: str
    expires_in: int
    refresh_token: str
    claims: dict[str, Any]

    def body(self) -> dict[str, Any]:
        return {
            "access_token": self.access_token,
            "token_type": "Bearer",
            "expires_in": self.expires_in,
            "refresh_token": self.refresh_token,
        }


PermissionsFor = Callable[[Sequence[str]], list[str]]


class AuthService:
    def __init__(
        self,
        users: UserStore,
        sessions: SessionStore,
        codec: TokenCodec,
        limiter: Limiter,
        audit: AuditSink,
        throttle: Throttle,
        permissions_for: PermissionsFor = lambda roles: [],
    ) -> None:
        self.users = users
        self.sessions = sessions
        self.codec = codec
        self.limiter = limiter
        self.audit = audit
        self.throttle = throttle
        self.permissions_for = permissions_for

    # -- login ---------------------------------------------------------------------------------
    def login(self, username: str, password: str, client: Client) -> TokenPair:
        """Blocking (argon2): run in a worker thread."""
        name = normalise_username(username)[:150]
        try:  # the slots are taken before the password is checked (parallel guesses)
            attempt = self.throttle.login.begin(name, client.ip)
        except ThrottledError as exc:
            self._audit(
                "auth.login",
                "deny",
                client,
                actor=name,
                reason="throttled",
                details={"budget": exc.budget, "retry_after": exc.retry_after},
            )
            raise
        # a name no account can have (NUL, which PostgreSQL refuses, or any other off-pattern
        # character) is an unknown user: no lookup, the same argon2 cost and the same answer
        user = self.users.find(name) if USERNAME_RE.fullmatch(name) else None
        ok = verify_password(user.password_hash if user else None, password)
        if not (ok and user is not None and user.active):  # the held slots stay spent
            lockout = attempt.failed()
            reason = "unknown user" if user is None else ("inactive" if ok else "bad password")
            self._audit("auth.login", "failure", client, actor=name, reason=reason)
            if lockout is not None:
                self._audit_lockout(lockout, client)
            raise AuthenticationError(BAD_CREDENTIALS, code="invalid_credentials")
        attempt.succeeded()
        self._upgrade_hash(user, password)
        pair = self.start_session(user, Seen(client.ip, client.user_agent))
        self._audit(
            "auth.login",
            "success",
            client,
            actor=user.id,
            tenant=user.tenant,
            details={"username": user.username, "sid": pair.claims["sid"]},
        )
        return pair

    def _audit_lockout(self, lockout: Lockout, client: Client) -> None:
        """The account-wide ceiling was reached: every address now waits (alerted, A13)."""
        self._audit(
            "auth.lockout",
            "deny",
            client,
            actor=lockout.account,
            reason="account-wide failure ceiling reached",
            details={
                "scope": lockout.scope,
                "account": lockout.account,
                "failures": lockout.failures,
                "window": lockout.window,
            },
        )

    # -- refresh -------------------------------------------------------------------------------
    def refresh(self, refresh_token: str, client: Client) -> TokenPair:
        decision = self.limiter.hit(
            f"refresh:ip:{client.ip or '-'}", self.throttle.refresh_per_ip, self.throttle.window
        )
        if not decision.allowed:
            self._audit("auth.refresh", "deny", client, reason="throttled")
            raise RateLimitedError(decision.retry_after, "too many refreshes")
        try:
            rotation = self.sessions.rotate(refresh_token, seen=Seen(client.ip, client.user_agent))
        except RefreshReuseError:
            family = self.sessions.family_of(refresh_token)
            self._audit(
                "auth.refresh_reuse",
                "deny",
                client,
                reason="refresh token reused",
                details={"sid": family},
            )
            raise
        except AuthenticationError as exc:
            self._audit("auth.refresh", "failure", client, reason=exc.detail)
            raise
        user = self.users.get(rotation.user_id)
        if not user.active:
            self.sessions.revoke(rotation.family_id, "user_disabled")
            self._audit("auth.refresh", "failure", client, actor=user.id, reason="inactive")
            raise AuthenticationError("session ended", code="invalid_refresh_token")
        self._audit(
            "auth.refresh",
            "success",
            client,
            actor=user.id,
            tenant=user.tenant,
            details={"sid": rotation.family_id},
        )
        return self._pair(user, rotation)

    def logout(
        self, family_id: str | None, refresh_token: str | None, actor: str, client: Client
    ) -> None:
        """End the caller's session, and the family of ``refresh_token`` when it is the caller's
        own; another user's token is ignored, never revoked (recorded as ``ignored``)."""
        families = {f for f in (family_id,) if f}
        details: dict[str, Any] = {}
        if refresh_token:
            owned = self.sessions.owner_of(refresh_token)
            if owned is not None and owned[1] == actor:
                families.add(owned[0])
            elif owned is not None:
                details["ignored"] = "refresh token of another user"
        for family in families:
            self.sessions.revoke(family, "logout")
        self._audit(
            "auth.logout",
            "success",
            client,
            actor=actor,
            details={"sids": sorted(families), **details},
        )

    # -- helpers -------------------------------------------------------------------------------
    def start_session(self, user: User, seen: Seen | None = None) -> TokenPair:
        """A new refresh family and its first token pair, for a user already authenticated
        (password here, OIDC in ``identity.oidc``)."""
        return self._pair(user, self.sessions.start(user.id, user.tenant, seen=seen))

    def _upgrade_hash(self, user: User, password: str) -> None:
        """After a successful verify: re-hash under the current argon2 parameters when the stored
        hash was made with others (A15)."""
        if user.password_hash and needs_rehash(user.password_hash):
            self.users.rehash(user.id, user.password_hash, HASHER.hash(password))

    def _pair(self, user: User, rotation: Any) -> TokenPair:
        token, claims = self.codec.issue(
            {
                "sub": user.id,
                "preferred_username": user.username,
                "email": user.email,
                "roles": list(user.roles),
                "permissions": self.permissions_for(user.roles),
                "tenant": user.tenant,
                "sid": rotation.family_id,
                # an administrator set the password: only POST /auth/password (the policy, A15)
                **({"pwd_change_required": True} if user.password_change_required else {}),
            }
        )
        return TokenPair(token, self.codec.ttl, rotation.refresh_token, claims)

    def _audit(
        self,
        action: str,
        outcome: Outcome,
        client: Client,
        *,
        actor: str | None = None,
        tenant: str | None = None,
        reason: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        self.audit.record_sync(
            client.event(
                action, outcome, actor=actor, tenant=tenant, reason=reason, details=details
            )
        )
