"""Authorization at the HTTP layer: every deny is counted (L6) and audited (L2) before it is raised.

Route handlers call ``enforce`` with a registered action; the decision is the ``Authorizer``'s, the
403 (with every reason, the first in ``X-Auth-Deny-Reason``) is ``gateway.problem``'s.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from garrison.app import Services
from garrison.errors import ForbiddenError
from garrison.identity.service import Client
from garrison.policy import Decision, Resource
from garrison.principal import Principal


async def record_deny(
    svc: Services,
    who: Principal | None,
    reasons: Sequence[str],
    client: Client,
    *,
    action: str | None = None,
    tenant: str | None = None,
) -> None:
    """Count and audit one authorization deny (``authz.deny``)."""
    for reason in reasons:
        svc.metrics.policy_deny(reason)
    details: dict[str, Any] = {"reasons": list(reasons)}
    if action is not None:
        details["action"] = action
    await svc.audit.record(
        client.event(
            "authz.deny",
            "deny",
            actor=who.sub if who else None,
            tenant=tenant if tenant is not None else (who.tenant if who else None),
            reason=reasons[0] if reasons else None,
            details=details,
        )
    )


async def enforce(
    svc: Services,
    who: Principal | None,
    action: str,
    client: Client,
    *,
    tenant: str | None = None,
    resource: Resource | None = None,
    params: Mapping[str, Any] | None = None,
) -> Decision:
    """The decision if it allows; otherwise record the deny and raise ``ForbiddenError``."""
    decision = svc.authorizer.decide(who, action, resource=resource, params=params, tenant=tenant)
    if not decision.allow:
        await record_deny(svc, who, decision.reasons, client, action=action, tenant=tenant)
        raise ForbiddenError(f"{action} denied", reasons=decision.reasons)
    return decision
