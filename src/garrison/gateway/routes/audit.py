"""``/admin/audit`` and ``/admin/audit/verify`` (L4, L7): read and prove the audit log.

Actions ``audit.read`` and ``audit.verify``. A tenant admin (or a platform admin acting in a
tenant) sees only that tenant's records, whatever ``tenant=`` it asks for; the chain is
platform-wide, so ``audit.verify`` is platform-only. Verify answers 200 with ``ok`` true or false
(a finding, not a failed request); ``?anchor=SEQ:HASH`` also checks the log still reaches that head.
"""

from __future__ import annotations

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

from garrison.audit.checkpoint import stored_public_keys
from garrison.audit.query import AuditFilter, parse_time, search
from garrison.audit.verify import parse_anchor, verify_chain
from garrison.errors import ValidationError
from garrison.gateway.requests import admit, services

_PARAMS = frozenset({"action", "actor", "tenant", "outcome", "since", "until", "limit"})


def _filter(request: Request, tenant_bound: str | None) -> AuditFilter:
    params = request.query_params
    unknown = sorted(set(params) - _PARAMS)
    if unknown:
        raise ValidationError(
            "unknown query parameter", reasons=[f"{n}: not a filter" for n in unknown]
        )
    now = services(request).clock()
    limit = params.get("limit", "100")
    if not limit.isdigit():
        raise ValidationError("bad limit", reasons=["limit: a whole number"])
    return AuditFilter(
        action=params.get("action") or None,
        actor=params.get("actor") or None,
        tenant=tenant_bound or params.get("tenant") or None,
        outcome=params.get("outcome") or None,
        since=parse_time(params["since"], now, name="since") if params.get("since") else None,
        until=parse_time(params["until"], now, name="until") if params.get("until") else None,
        limit=int(limit),
    )


async def list_records(request: Request) -> JSONResponse:
    actor = await admit(request, "audit.read")
    query = _filter(request, actor.tenant)
    records = await anyio.to_thread.run_sync(search, services(request).db, query)
    return JSONResponse({"records": records, "count": len(records)})


async def verify(request: Request) -> JSONResponse:
    await admit(request, "audit.verify")  # platform-only: the chain is platform-wide
    svc = services(request)
    db = svc.db
    text = request.query_params.get("anchor")
    anchor = parse_anchor(text) if text else None
    report = await anyio.to_thread.run_sync(
        lambda: verify_chain(db, stored_public_keys(db), svc.audit_seal, anchor=anchor)
    )
    return JSONResponse(report.as_dict())


def routes() -> list[BaseRoute]:
    return [
        Route("/admin/audit", list_records, methods=["GET"]),
        Route("/admin/audit/verify", verify, methods=["GET"]),
    ]
