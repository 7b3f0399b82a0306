"""One refusal event, whatever refused and on whichever path (L2, L3).

Every refusal has the same shape: ``actor`` is the subject (the user's ``sub``) when it is known,
the credential is named apart (``details.authenticated_by``: its kind, and its id where it has one:
the JWT's ``jti``, the API key's id), ``reason`` is the first reason and ``details.reasons`` all of
them, with the action, method and canonical path. Authorization denies are ``authz.deny``, CSRF
refusals ``auth.csrf``, refused credentials ``auth.refused``.

Volume: a flood of garbage tokens must not fill the audit log, and a refusal of a known identity
must never be dropped. So refusals that name no identity are aggregated per (client address,
action, reason) and second: the first of each second is written at once, and the ones after it
are written as one record carrying ``details.count`` when the second is over (``RefusalLog``). A
refusal of a known identity (a denied user, a disabled account's token) is always written alone.
At most ``max_keys`` distinct aggregates are kept per second; past that, anonymous refusals of
that second fold into one overflow record per reason.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from garrison.admission.attempt import Attempt, CredentialKind
from garrison.audit.event import AuditEvent, AuditSink, Outcome
from garrison.clock import Clock
from garrison.principal import Principal

log = logging.getLogger("garrison.admission")


def credential_of(principal: Principal | None, kind: CredentialKind) -> dict[str, Any]:
    credential: dict[str, Any] = {"type": kind}
    if principal is not None and principal.credential_id:
        credential["id"] = principal.credential_id
    return credential


def refusal_event(
    attempt: Attempt | None,
    action: str,
    reasons: Sequence[str],
    principal: Principal | None,
    kind: CredentialKind,
    *,
    event: str = "authz.deny",
    outcome: Outcome = "deny",
    tenant: str | None = None,
    code: str | None = None,
    subject: str | None = None,
) -> AuditEvent:
    """The audit record of one refusal (see the module docstring). ``subject``: the ``sub`` of a
    refused credential whose owner is known although no principal was admitted (a disabled
    account's token, a revoked session)."""
    details: dict[str, Any] = {
        "action": action,
        "reasons": list(reasons),
        "authenticated_by": credential_of(principal, kind),
    }
    if attempt is not None:
        details["method"] = attempt.method
        details["path"] = attempt.path
    if code is not None:
        details["code"] = code
    if tenant is None and principal is not None:
        tenant = principal.tenant  # an unauthenticated caller's X-Tenant-ID is a claim, not kept
    return AuditEvent(
        action=event,
        outcome=outcome,
        actor=principal.sub if principal is not None else subject,
        tenant=tenant,
        ip=attempt.ip if attempt is not None else None,
        user_agent=attempt.user_agent if attempt is not None else None,
        reason=reasons[0] if reasons else None,
        request_id=attempt.request_id if attempt is not None else None,
        details=details,
    )


@dataclass(slots=True)
class _Aggregate:
    event: AuditEvent
    suppressed: int = 0


class RefusalLog:
    """Writes refusals; anonymous ones are aggregated per client, action, reason and second."""

    def __init__(self, audit: AuditSink, clock: Clock, *, max_keys: int = 1_000) -> None:
        self.audit = audit
        self.clock = clock
        self.max_keys = max_keys
        self._second = 0
        # one event loop, and no await between reading and updating: no lock is needed
        self._open: dict[tuple[str | None, str, str | None], _Aggregate] = {}

    async def record(self, event: AuditEvent) -> None:
        """Write ``event`` (durably, before returning) or fold it into this second's aggregate."""
        if event.actor is not None:
            await self._write(event)
            return
        second = int(self.clock())
        closing: list[AuditEvent] = []
        if second != self._second:
            closing = self._take()
            self._second = second
        key = (event.ip, str(event.details.get("action")), event.reason)
        if key not in self._open and len(self._open) >= self.max_keys:
            key = (None, "*", event.reason)  # overflow: one aggregate per reason
            event = replace(event, ip=None, user_agent=None, request_id=None)
        found = self._open.get(key)
        first: AuditEvent | None = None
        if found is None:
            self._open[key] = _Aggregate(event)
            first = event
        else:
            found.suppressed += 1
        for summary in closing:
            await self._write(summary)
        if first is not None:
            await self._write(first)

    async def flush(self, *, everything: bool = False) -> None:
        """Write the aggregates of seconds that are over (all of them with ``everything``)."""
        if not everything and int(self.clock()) == self._second:
            return
        closing = self._take()
        for summary in closing:
            await self._write(summary)

    def _take(self) -> list[AuditEvent]:
        summaries = [
            replace(
                agg.event,
                details={**agg.event.details, "count": agg.suppressed, "aggregated": True},
            )
            for agg in self._open.values()
            if agg.suppressed
        ]
        self._open = {}
        return summaries

    async def _write(self, event: AuditEvent) -> None:
        try:
            await self.audit.record(event)
        except Exception:  # the refusal stands whether or not its record could be written
            log.exception("could not audit a refusal")
