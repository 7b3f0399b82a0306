"""What a signed-in user does about their own account (A15, A16): change the password, list and end
their sessions.

Changing the password is the re-authentication ASVS asks for (6.2.3, 7.5.1): the current password
is checked like a login's, under the same throttle (``garrison.ratelimit.failures``: a stolen
session is no way to guess the password), and the change ends every OTHER session of the user:
their refresh families are revoked, so their access tokens (each carries its family's ``sid``)
stop at once on every replica, while the caller's own session lives on. ``tokens_valid_after``,
the user-wide cut that an administrator's reset or ``revoke-sessions`` moves, is left alone: moving
it would end the caller's session too. Ending every other session is done by changing the password
(with the current one: re-authenticated), ending one by ``DELETE /auth/sessions/{id}``.

An administrator's reset (``usecases.admin``) sets a random password the user must change first:
the account's tokens then carry ``pwd_change_required`` and the policy refuses them everything but
``auth.password``. After the change, a refresh yields tokens without it.
"""

from __future__ import annotations

from dataclasses import dataclass

from garrison.audit.event import AuditSink
from garrison.errors import ForbiddenError, NotFoundError, ThrottledError, ValidationError
from garrison.identity.passwords import verify_password
from garrison.identity.service import Client
from garrison.identity.sessions import SessionInfo, SessionStore
from garrison.identity.users import UserStore
from garrison.principal import Principal
from garrison.ratelimit.failures import FailureThrottle

WRONG_PASSWORD = "current password does not match"  # noqa: S105 (a message)
NO_PASSWORD = "this account signs in without a Garrison password"  # noqa: S105
SAME_PASSWORD = "new_password: must differ from the current password"  # noqa: S105


@dataclass(frozen=True, slots=True)
class Changed:
    """What a password change did: the sessions it ended (all but the caller's)."""

    ended_sessions: int


@dataclass(eq=False, repr=False)
class SelfService:
    users: UserStore
    sessions: SessionStore
    throttle: FailureThrottle
    audit: AuditSink

    # -- the password ----------------------------------------------------------------------------
    def change_password(self, who: Principal, current: str, new: str, client: Client) -> Changed:
        """Blocking (argon2): run in a worker thread. 403 for a wrong current password (counted
        as a failed login), 422 with every reason for a refused new one."""
        user = self.users.get(who.sub)
        if user.password_hash is None:
            raise ValidationError(NO_PASSWORD, reasons=[f"current_password: {NO_PASSWORD}"])
        try:
            attempt = self.throttle.begin(user.username, client.ip)
        except ThrottledError:
            self._audit("failure", who, client, reason="throttled")
            raise
        if not verify_password(user.password_hash, current):
            attempt.failed()
            self._audit("failure", who, client, reason=WRONG_PASSWORD)
            raise ForbiddenError(WRONG_PASSWORD, reasons=[WRONG_PASSWORD], code="wrong_password")
        attempt.succeeded()
        if verify_password(user.password_hash, new):
            self._audit("failure", who, client, reason="same password")
            raise ValidationError("password refused", reasons=[SAME_PASSWORD], code="weak_password")
        try:
            ended = self.users.set_password(user.id, new, keep_session=who.session_id)
        except ValidationError as exc:
            self._audit("failure", who, client, reason="; ".join(exc.reasons) or exc.detail)
            raise
        self._audit(
            "success",
            who,
            client,
            details={
                "sid": who.session_id,
                "ended_sessions": ended,
                "was_required": user.password_change_required,
            },
        )
        return Changed(ended)

    # -- sessions --------------------------------------------------------------------------------
    def list_sessions(self, who: Principal) -> list[SessionInfo]:
        return self.sessions.live_sessions(who.sub)

    def end_session(self, who: Principal, session_id: str, client: Client) -> None:
        """End one of the caller's own live sessions; another user's (or no such) id is 404,
        the same answer, so ids cannot be probed."""
        if not self.sessions.end_own(who.sub, session_id):
            raise NotFoundError("no such session")
        self.audit.record_sync(
            client.event(
                "auth.session_end",
                "success",
                actor=who.sub,
                tenant=who.tenant,
                details={"sid": session_id, "current": session_id == who.session_id},
            )
        )

    def _audit(
        self,
        outcome: str,
        who: Principal,
        client: Client,
        *,
        reason: str | None = None,
        details: dict[str, object] | None = None,
    ) -> None:
        self.audit.record_sync(
            client.event(
                "auth.password_change",
                "success" if outcome == "success" else "failure",
                actor=who.sub,
                tenant=who.tenant,
                reason=reason,
                details=details,
            )
        )
