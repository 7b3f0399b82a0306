"""API-key use (L2): every admitted request counted, one ``auth.api_key`` record per key and second.

A key is a machine's credential: a busy client uses it thousands of times a second, and a record
per request would be most of the audit log. A record per cache window (what a lookup-time record
gives) would miss most uses. So every admitted API-key request is counted, per (key, tenant acted
in, second), and each such aggregate is written once, when its second is over, as one
``auth.api_key`` record with ``outcome`` success and:

- ``actor``: the key's user; ``tenant``: the tenant acted in;
- ``ip``, ``user_agent``, ``request_id``: the second's first use;
- ``details``: ``authenticated_by`` (``{"type": "api_key", "id": KEY_ID}``), ``count`` (the uses
  in that second), ``second`` (its UNIX second), ``actions`` (uses per action), ``method`` and
  ``path`` of the first use, and ``ips`` (the distinct client addresses, at most ``MAX_IPS``).

Failures are not recorded here: a refused key is the refusal path's ``auth.refused`` record
(``admission.refusals``). Counting never waits for the database; the records are written by the
pipeline's flush (every second while serving) and on shutdown (``Pipeline.drain``).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

from garrison.admission.attempt import Admission
from garrison.audit.event import AuditEvent, AuditSink
from garrison.clock import Clock

log = logging.getLogger("garrison.admission")

#: Distinct client addresses named per aggregate; past it, ``ips_truncated`` says so.
MAX_IPS = 10
#: Distinct actions counted apart per aggregate; the rest count under ``*``.
MAX_ACTIONS = 32


@dataclass(slots=True)
class _Uses:
    first: Admission
    count: int = 0
    actions: dict[str, int] = field(default_factory=dict)
    ips: list[str] = field(default_factory=list)
    truncated: bool = False

    def add(self, admission: Admission) -> None:
        self.count += 1
        action = admission.action
        if action not in self.actions and len(self.actions) >= MAX_ACTIONS:
            action = "*"
        self.actions[action] = self.actions.get(action, 0) + 1
        ip = admission.attempt.ip if admission.attempt is not None else None
        if ip is not None and ip not in self.ips:
            if len(self.ips) < MAX_IPS:
                self.ips.append(ip)
            else:
                self.truncated = True


class KeyUseLog:
    """Counts API-key uses per (key, tenant, second); writes each second's counts once it is over."""

    def __init__(self, audit: AuditSink, clock: Clock) -> None:
        self.audit = audit
        self.clock = clock
        self._second = 0
        # one event loop, and no await between reading and updating: no lock is needed
        self._open: dict[tuple[str, str | None], _Uses] = {}
        self._closed: list[AuditEvent] = []
        self._writer: asyncio.Task[None] | None = None

    def count(self, admission: Admission) -> None:
        """One admitted API-key request; never waits (a second that is over is written by a
        background task, so a flush that is late still loses nothing)."""
        principal = admission.principal
        if principal is None or principal.credential_id is None:
            return
        second = int(self.clock())
        if second != self._second:
            self._close()
            self._second = second
            self._write_soon()
        key = (principal.credential_id, admission.tenant)
        uses = self._open.get(key)
        if uses is None:
            uses = self._open[key] = _Uses(admission)
        uses.add(admission)

    async def flush(self, *, everything: bool = False) -> None:
        """Write the seconds that are over (all of them with ``everything``)."""
        if everything:
            writer = self._writer
            if writer is not None and not writer.done() and writer is not asyncio.current_task():
                await asyncio.wait([writer])
        if everything or int(self.clock()) != self._second:
            self._close()
        while self._closed:
            events, self._closed = self._closed, []
            for event in events:
                try:
                    await self.audit.record(event)
                except Exception:  # the requests were served; their record is reported as lost
                    log.exception("could not audit API-key use (%d uses)", event.details["count"])

    def _close(self) -> None:
        if self._open:
            self._closed.extend(self._event(uses) for uses in self._open.values())
            self._open = {}

    def _write_soon(self) -> None:
        if not self._closed or (self._writer is not None and not self._writer.done()):
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # outside an event loop: the next flush writes them
            return
        self._writer = loop.create_task(self.flush(), name="garrison-key-uses")

    def _event(self, uses: _Uses) -> AuditEvent:
        first = uses.first
        principal, attempt = first.principal, first.attempt
        assert principal is not None
        details: dict[str, Any] = {
            "authenticated_by": {"type": "api_key", "id": principal.credential_id},
            "count": uses.count,
            "second": self._second,
            "actions": dict(uses.actions),
            "method": attempt.method if attempt is not None else None,
            "path": attempt.path if attempt is not None else None,
            "ips": list(uses.ips),
        }
        if uses.truncated:
            details["ips_truncated"] = True
        return AuditEvent(
            action="auth.api_key",
            outcome="success",
            actor=principal.sub,
            tenant=first.tenant,
            ip=attempt.ip if attempt is not None else None,
            user_agent=attempt.user_agent if attempt is not None else None,
            request_id=attempt.request_id if attempt is not None else None,
            details=details,
        )
