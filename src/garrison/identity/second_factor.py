"""The second factor's flows (A14, A13): enrol, confirm, prove at login, remove; throttled, audited.

Every code check, whatever the flow, spends the ``mfa`` failure throttle
(``garrison.ratelimit.failures``, the one the password login uses, under its own scope and keyed by
the user's id and the client's address): wrong codes back the (user, address) pair off
exponentially, an account-wide ceiling is audited as ``auth.lockout``, and a success gives the
slots back. A code is a TOTP code (6 digits) or, where a login or a removal asks, one of the
recovery codes.

Audited: ``auth.mfa.enrol``, ``auth.mfa.confirm``, ``auth.mfa.remove`` and ``auth.mfa.verify``, each
success, failure and throttled attempt, with the method but never the seed or a code.

Removal is a re-authentication: the current password and a current code (TOTP or recovery) in the
same request, so a stolen access token alone cannot take the factor off (ASVS 6.4.4, A16).
"""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass
from typing import Any, Literal

from garrison.audit.event import AuditSink, Outcome
from garrison.errors import (
    AuthenticationError,
    ConflictError,
    ForbiddenError,
    NotFoundError,
    ThrottledError,
    ValidationError,
)
from garrison.identity import totp
from garrison.identity.mfa import PENDING_TTL, MfaStore
from garrison.identity.passwords import verify_password
from garrison.identity.service import Client
from garrison.identity.users import User
from garrison.ratelimit.failures import Attempt, FailureThrottle, Lockout

Method = Literal["totp", "recovery_code"]
BAD_CODE = "invalid code"
REAUTH_FAILED = "re-authentication failed"


@dataclass(eq=False, repr=False)
class SecondFactor:
    store: MfaStore
    throttle: FailureThrottle
    audit: AuditSink
    _: KW_ONLY
    issuer: str

    def required_for(self, user: User) -> bool:
        """Whether a login of ``user`` must show a second factor."""
        return self.store.enrolled(user.id)

    # -- enrolment -----------------------------------------------------------------------------
    def enrol(self, user: User, client: Client) -> dict[str, str]:
        """A pending TOTP authenticator: its seed and otpauth URI, shown this once."""
        enrolment = self.store.begin_enrolment(user.id)
        if enrolment is None:
            self._audit("auth.mfa.enrol", "failure", client, user, reason="already enrolled")
            raise ConflictError(
                "a TOTP authenticator is already enrolled; remove it first (DELETE /auth/mfa/totp)"
            )
        self._audit("auth.mfa.enrol", "success", client, user, details={"method": "totp"})
        return {
            "secret": enrolment.seed,
            "otpauth_uri": totp.provisioning_uri(enrolment.seed, user.username, self.issuer),
        }

    def confirm(self, user: User, code: str, client: Client) -> list[str]:
        """Prove the pending authenticator with its first code: ten recovery codes, shown once."""
        pending = self.store.pending_seed(user.id)
        if pending is None:
            self._audit("auth.mfa.confirm", "failure", client, user, reason="nothing pending")
            raise ConflictError("no pending TOTP enrolment; start one with POST /auth/mfa/totp")
        seed, created_at = pending
        if created_at + PENDING_TTL <= self.store.clock():
            self._audit("auth.mfa.confirm", "failure", client, user, reason="enrolment expired")
            raise ConflictError("the TOTP enrolment expired; start again with POST /auth/mfa/totp")
        attempt = self._begin("auth.mfa.confirm", user, client)
        step = totp.matching_step(seed, code, self.store.clock())
        if step is None:
            self._failed(attempt.failed(), "auth.mfa.confirm", user, client)
            raise ValidationError(BAD_CODE, reasons=["code: does not match the authenticator"])
        attempt.succeeded()
        codes = self.store.confirm(user.id, step)
        if codes is None:
            self._audit("auth.mfa.confirm", "failure", client, user, reason="nothing pending")
            raise ConflictError("no pending TOTP enrolment; start one with POST /auth/mfa/totp")
        self._audit(
            "auth.mfa.confirm",
            "success",
            client,
            user,
            details={"method": "totp", "recovery_codes": len(codes)},
        )
        return codes

    def remove(self, user: User, current_password: str, code: str, client: Client) -> None:
        """Remove the authenticator and its recovery codes, after a fresh re-authentication.

        Blocking (argon2): run in a worker thread."""
        if self.store.status(user.id) == "none":
            self._audit("auth.mfa.remove", "failure", client, user, reason="nothing enrolled")
            raise NotFoundError("no TOTP authenticator is enrolled")
        attempt = self._begin("auth.mfa.remove", user, client)
        password_ok = verify_password(user.password_hash, current_password)
        method = self._check(user, code) if password_ok else None
        if method is None:
            reason = "bad code" if password_ok else "bad password"
            self._failed(attempt.failed(), "auth.mfa.remove", user, client, reason=reason)
            raise ForbiddenError(REAUTH_FAILED, reasons=[REAUTH_FAILED])
        attempt.succeeded()
        self.store.remove(user.id)
        self._audit("auth.mfa.remove", "success", client, user, details={"method": method})

    # -- login ---------------------------------------------------------------------------------
    def prove(self, user: User, code: str, client: Client) -> Method:
        """Check a login's second factor; ``AuthenticationError`` (401) or ``ThrottledError``."""
        attempt = self._begin("auth.mfa.verify", user, client)
        method = self._check(user, code)
        if method is None:
            self._failed(attempt.failed(), "auth.mfa.verify", user, client)
            raise AuthenticationError(BAD_CODE, code="invalid_mfa_code", subject=user.id)
        attempt.succeeded()
        return method

    def _check(self, user: User, code: str) -> Method | None:
        """A TOTP code of a step not used before, or an unspent recovery code."""
        if totp.CODE_RE.fullmatch(code):
            return "totp" if self.store.check_totp(user.id, code) else None
        if self.store.enrolled(user.id) and self.store.use_recovery_code(user.id, code):
            return "recovery_code"
        return None

    # -- throttle and audit --------------------------------------------------------------------
    def _begin(self, action: str, user: User, client: Client) -> Attempt:
        try:
            return self.throttle.begin(user.id, client.ip)
        except ThrottledError as exc:
            self._audit(
                action,
                "deny",
                client,
                user,
                reason="throttled",
                details={"budget": exc.budget, "retry_after": exc.retry_after},
            )
            raise ThrottledError(exc.budget, exc.retry_after, "too many wrong codes") from None

    def _failed(
        self,
        lockout: Lockout | None,
        action: str,
        user: User,
        client: Client,
        *,
        reason: str = "bad code",
    ) -> None:
        self._audit(action, "failure", client, user, reason=reason)
        if lockout is not None:
            self._audit(
                "auth.lockout",
                "deny",
                client,
                user,
                reason="account-wide failure ceiling reached",
                details={
                    "scope": lockout.scope,
                    "account": lockout.account,
                    "failures": lockout.failures,
                    "window": lockout.window,
                },
            )

    def _audit(
        self,
        action: str,
        outcome: Outcome,
        client: Client,
        user: User,
        *,
        reason: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        self.audit.record_sync(
            client.event(
                action,
                outcome,
                actor=user.id,
                tenant=user.tenant,
                reason=reason,
                details=details,
            )
        )
