"""Login, refresh and logout (A1, A5, A13): the flows, their throttles and their audit records.

Failures look alike whether or not the account exists: the same error, and an argon2 verify
either way. The throttle counts only failures, per account and per IP; when either is exhausted the answer is
429 with the seconds until its window ends. A limiter that cannot be reached fails closed (503).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from garrison.audit.event import AuditEvent, AuditSink, Outcome
from garrison.errors import AuthenticationError, RateLimitedError, RefreshReuseError
from garrison.identity.passwords import verify_password
from garrison.identity.sessions import SessionStore
from garrison.identity.users import User, UserStore, normalise_username
from garrison.ratelimit.limiter import Limiter
from garrison.tokens.jwt import TokenCodec

BAD_CREDENTIALS = "invalid username or password"


@dataclass(frozen=True, slots=True)
class Throttle:
    per_account: int
    per_ip: int
    window: int
    refresh_per_ip: int


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
        acct_key, ip_key = f"login:acct:{name}", f"login:ip:{client.ip or '-'}"
        t = self.throttle
        for key, limit in ((acct_key, t.per_account), (ip_key, t.per_ip)):
            decision = self.limiter.peek(key, limit, t.window)
            if not decision.allowed:
                self._audit("auth.login", "deny", client, actor=name, reason="throttled")
                raise RateLimitedError(decision.retry_after, "too many failed logins")
        user = self.users.find(name)
        ok = verify_password(user.password_hash if user else None, password)
        if not (ok and user is not None and user.active):
            self.limiter.hit(acct_key, t.per_account, t.window)
            self.limiter.hit(ip_key, t.per_ip, t.window)
            reason = "unknown user" if user is None else ("inactive" if ok else "bad password")
            self._audit("auth.login", "failure", client, actor=name, reason=reason)
            raise AuthenticationError(BAD_CREDENTIALS, code="invalid_credentials")
        pair = self.start_session(user)
        self._audit(
            "auth.login",
            "success",
            client,
            actor=user.id,
            tenant=user.tenant,
            details={"username": user.username, "sid": pair.claims["sid"]},
        )
        return pair

    # -- refresh -------------------------------------------------------------------------------
    def refresh(self, refresh_token: str, client: Client) -> TokenPair:
        decision = self.limiter.hit(
            f"refresh:ip:{client.ip or '-'}", self.throttle.refresh_per_ip, self.throttle.window
        )
        if not decision.allowed:
            self._audit("auth.refresh", "deny", client, reason="throttled")
            raise RateLimitedError(decision.retry_after, "too many refreshes")
        try:
            rotation = self.sessions.rotate(refresh_token)
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
        families = {f for f in (family_id,) if f}
        if refresh_token:
            other = self.sessions.family_of(refresh_token)
            if other:
                families.add(other)
        for family in families:
            self.sessions.revoke(family, "logout")
        self._audit(
            "auth.logout", "success", client, actor=actor, details={"sids": sorted(families)}
        )

    # -- helpers -------------------------------------------------------------------------------
    def start_session(self, user: User) -> TokenPair:
        """A new refresh family and its first token pair, for a user already authenticated
        (password here, OIDC in ``identity.oidc``)."""
        return self._pair(user, self.sessions.start(user.id, user.tenant))

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
