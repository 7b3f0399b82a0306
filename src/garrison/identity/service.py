"""Login, refresh and logout (A1, A5, A13): the flows, their throttles and their audit records.

Failures look alike whether or not the account exists: the same error, and an argon2 verify
either way. The login throttle (``garrison.ratelimit.failures``) counts only failures: it locks
the (account, address) pair with a growing backoff, so a third party's guesses do not lock the user
out; an account-wide ceiling bounds guessing from many addresses, and reaching it is audited as
``auth.lockout``; a per-address budget stops spraying across accounts. Throttled attempts get 429
with the seconds to wait, the same answer for a missing account. An attempt holds its slots while
its password is checked (a success gives them back), so guesses sent in parallel cannot outrun a
budget. A limiter that cannot be reached fails closed (503).

A user with a confirmed TOTP authenticator (A14) gets no tokens from the password: ``sign_in``
answers ``MfaPending`` with a single-use ``mfa_token`` (five minutes, bound to the user and to the
password step), and ``complete_mfa`` turns it and a code into the token pair, whose ``amr`` then
says ``["pwd", "otp"]`` (``identity.second_factor`` checks and throttles the code). Every access
token carries its login's ``amr``, ``acr`` and ``auth_time``, kept by the refresh family.

Logout revokes the caller's own session, and the family of a refresh token in the body only if that
token belongs to the caller: another user's token is ignored (and noted in the audit record), so
holding a copy of someone's refresh token is not a way to end their session.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from garrison.audit.event import AuditEvent, AuditSink, Outcome
from garrison.errors import (
    AuthenticationError,
    NotFoundError,
    RateLimitedError,
    RefreshReuseError,
    ThrottledError,
    UnavailableError,
)
from garrison.identity.gotrue import GoTrueRefresh, GoTrueTokens
from garrison.identity.passwords import HASHER, needs_rehash, verify_password
from garrison.identity.sessions import PREFIX as REFRESH_PREFIX
from garrison.identity.sessions import Rotation, Seen, SessionStore
from garrison.identity.users import USERNAME_RE, User, UserStore, normalise_username
from garrison.principal import SECOND_FACTORS
from garrison.ratelimit.failures import FailureThrottle, Lockout
from garrison.ratelimit.limiter import Limiter
from garrison.tokens.jwt import TokenCodec

if TYPE_CHECKING:
    from garrison.identity.second_factor import SecondFactor

BAD_CREDENTIALS = "invalid username or password"
BAD_MFA_TOKEN = "invalid or expired mfa token"  # noqa: S105 (a message)
PASSWORD_AMR: tuple[str, ...] = ("pwd",)


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


@dataclass(frozen=True, slots=True)
class MfaPending:
    """A right password of a user with a second factor: no tokens yet, a code is awaited (A14)."""

    mfa_token: str
    expires_in: int

    def body(self) -> dict[str, Any]:
        return {"mfa_required": True, "mfa_token": self.mfa_token, "expires_in": self.expires_in}


def acr_for(amr: Sequence[str]) -> str:
    """The assurance level a login reached (NIST SP 800-63B): ``aal2`` with a second factor."""
    return "aal2" if any(m in SECOND_FACTORS for m in amr) else "aal1"


PermissionsFor = Callable[[Sequence[str]], list[str]]


@dataclass(eq=False, repr=False)
class AuthService:
    users: UserStore
    sessions: SessionStore
    codec: TokenCodec
    limiter: Limiter
    audit: AuditSink
    throttle: Throttle
    permissions_for: PermissionsFor = lambda roles: []
    mfa: SecondFactor | None = None
    #: GoTrue's refresh grant (``SUPABASE_GOTRUE_URL``, seed 001); None: Garrison's tokens only
    gotrue: GoTrueRefresh | None = field(default=None, init=False)

    # -- login ---------------------------------------------------------------------------------
    def login(self, username: str, password: str, client: Client) -> TokenPair:
        """A password login that must end in tokens: ``sign_in`` for a user without a second
        factor; for one with a factor, 401 ``mfa_required`` (the HTTP login answers with
        ``MfaPending`` instead). Blocking (argon2): run in a worker thread."""
        found = self.sign_in(username, password, client)
        if isinstance(found, MfaPending):
            raise AuthenticationError("a second factor is required", code="mfa_required")
        return found

    def sign_in(
        self, username: str, password: str, client: Client, *, session: str = "token"
    ) -> TokenPair | MfaPending:
        """Blocking (argon2): run in a worker thread. A user with a second factor gets an
        ``MfaPending`` (no tokens) for ``complete_mfa``; ``session`` is what the tokens will be
        (``token`` or ``cookie``), kept with the pending login."""
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
        try:
            user = self.users.find(name) if USERNAME_RE.fullmatch(name) else None
        except UnavailableError:  # nothing was checked: an outage must not lock anyone out
            attempt.abandoned()
            raise
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
        seen = Seen(client.ip, client.user_agent)
        if self.mfa is not None and self.mfa.required_for(user):
            token, ttl = self.mfa.store.open_challenge(user.id, PASSWORD_AMR, session)
            self._audit(
                "auth.login",
                "success",
                client,
                actor=user.id,
                tenant=user.tenant,
                details={"username": user.username, "mfa_required": True},
            )
            return MfaPending(token, ttl)
        pair = self.start_session(user, seen)
        self._audit(
            "auth.login",
            "success",
            client,
            actor=user.id,
            tenant=user.tenant,
            details={"username": user.username, "sid": pair.claims["sid"]},
        )
        return pair

    def complete_mfa(self, mfa_token: str, code: str, client: Client) -> tuple[TokenPair, str]:
        """The second step of a login (A14): the token pair, and the session kind login asked for.

        The ``mfa_token`` is single-use, lives five minutes, and is bound to the user whose password
        earned it: a revocation of that user's sessions (or disabling them) in between ends it."""
        store = self.mfa.store if self.mfa is not None else None
        challenge = store.challenge(mfa_token) if store is not None else None
        user = None
        if challenge is not None:
            try:
                user = self.users.get(challenge.user_id)
            except NotFoundError:
                user = None
        if (
            self.mfa is None
            or store is None
            or challenge is None
            or user is None
            or not user.active
            or challenge.created_at < user.tokens_valid_after
        ):
            self._audit(
                "auth.mfa.verify",
                "failure",
                client,
                actor=challenge.user_id if challenge else None,
                reason=BAD_MFA_TOKEN,
            )
            raise AuthenticationError(BAD_MFA_TOKEN, code="invalid_mfa_token")
        method = self.mfa.prove(user, code, client)  # 401 or 429, audited there
        if not store.spend_challenge(challenge):  # a parallel request spent it first
            self._audit("auth.mfa.verify", "failure", client, actor=user.id, reason=BAD_MFA_TOKEN)
            raise AuthenticationError(BAD_MFA_TOKEN, code="invalid_mfa_token")
        pair = self.start_session(user, amr=(*challenge.amr, "otp"))
        details: dict[str, Any] = {"method": method, "sid": pair.claims["sid"]}
        if method == "recovery_code":
            details["recovery_codes_left"] = store.recovery_codes_left(user.id)
        self._audit(
            "auth.mfa.verify", "success", client, actor=user.id, tenant=user.tenant, details=details
        )
        return pair, challenge.session

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
    def refresh_grant(self, refresh_token: str, client: Client) -> TokenPair | GoTrueTokens:
        """``POST /auth/refresh`` with a token in the body: Garrison's own (``grt_``) are rotated
        here; any other goes to GoTrue when ``SUPABASE_GOTRUE_URL`` is set (seed 001)."""
        if self.gotrue is None or refresh_token.startswith(REFRESH_PREFIX):
            return self.refresh(refresh_token, client)
        self._refresh_budget(client)
        try:
            tokens = self.gotrue.refresh(refresh_token)
        except AuthenticationError as exc:
            self._audit(
                "auth.refresh",
                "failure",
                client,
                actor=exc.subject,
                reason=exc.detail,
                details={"idp": "supabase", "reasons": list(exc.reasons)},
            )
            raise
        except UnavailableError as exc:
            self._audit(
                "auth.refresh", "error", client, reason=exc.detail, details={"idp": "supabase"}
            )
            raise
        who = tokens.principal
        self._audit(
            "auth.refresh",
            "success",
            client,
            actor=who.sub,
            tenant=who.tenant,
            details={"idp": "supabase", "external_sub": who.extra.get("external_sub")},
        )
        return tokens

    def _refresh_budget(self, client: Client) -> None:
        decision = self.limiter.hit(
            f"refresh:ip:{client.ip or '-'}", self.throttle.refresh_per_ip, self.throttle.window
        )
        if not decision.allowed:
            self._audit("auth.refresh", "deny", client, reason="throttled")
            raise RateLimitedError(decision.retry_after, "too many refreshes")

    def refresh(self, refresh_token: str, client: Client) -> TokenPair:
        """Rotate one of Garrison's own refresh tokens (the only kind a cookie session holds)."""
        self._refresh_budget(client)
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
    def start_session(
        self, user: User, seen: Seen | None = None, *, amr: tuple[str, ...] = PASSWORD_AMR
    ) -> TokenPair:
        """A new refresh family and its first token pair, for a user already authenticated as
        ``amr`` says (password here, password and code after ``complete_mfa``, OIDC in
        ``identity.oidc``)."""
        return self._pair(user, self.sessions.start(user.id, user.tenant, amr=amr, seen=seen))

    def _upgrade_hash(self, user: User, password: str) -> None:
        """After a successful verify: re-hash under the current argon2 parameters when the stored
        hash was made with others (A15)."""
        if user.password_hash and needs_rehash(user.password_hash):
            self.users.rehash(user.id, user.password_hash, HASHER.hash(password))

    def _pair(self, user: User, rotation: Rotation) -> TokenPair:
        claims: dict[str, Any] = {
            "sub": user.id,
            "preferred_username": user.username,
            "email": user.email,
            "roles": list(user.roles),
            "permissions": self.permissions_for(user.roles),
            "tenant": user.tenant,
            "sid": rotation.family_id,
            "amr": list(rotation.amr),  # RFC 8176; the family's, on every refresh (A2, A14)
            "acr": acr_for(rotation.amr),
        }
        if rotation.auth_time is not None:
            claims["auth_time"] = int(rotation.auth_time)
        if user.password_change_required:  # an administrator set it: only POST /auth/password
            claims["pwd_change_required"] = True
        token, claims = self.codec.issue(claims)
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
