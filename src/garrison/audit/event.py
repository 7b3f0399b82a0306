"""The audit record (L3) and the port every package writes it through."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

Outcome = Literal["success", "failure", "deny", "error"]


@dataclass(frozen=True, slots=True)
class AuditEvent:
    action: str  # e.g. auth.login, auth.refresh_reuse, authz.deny, admin.user.disable
    outcome: Outcome
    actor: str | None = None  # user id / api key id / "cli:<user>" / "system"
    tenant: str | None = None
    ip: str | None = None
    user_agent: str | None = None
    reason: str | None = None
    request_id: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)
    ts: float | None = None  # filled by the writer when None


class AuditSink(Protocol):
    async def record(self, event: AuditEvent) -> None:
        """Return only once the event is durable (an acknowledged record is never lost)."""

    def record_sync(self, event: AuditEvent) -> None:
        """The same from synchronous code (CLI, worker threads)."""
