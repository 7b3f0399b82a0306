"""``/v1/secrets/{name}`` (V1): the vault over HTTP, tenant-scoped and role-gated.

The secret lives in the tenant the caller acts in (its own; a platform admin may name one with
``X-Tenant-ID``). Every call is decided by the authorizer before the vault is touched, so a caller
who may not read learns nothing about which names exist; a name that is not in the caller's tenant
is a plain 404, the same as one that exists nowhere.

- ``PUT``: action ``secret.write``; body ``{"value": "..."}``; 201 when created, 200 when replaced.
- ``GET``: action ``secret.read``, which requires a justification: the ``X-Justification`` header
  (preferred: query strings end up in access logs) or ``?justification=``.
- ``DELETE``: action ``secret.delete``, which requires a reason: ``X-Reason`` or ``?reason=``.

Every access, allowed or not, is audited (``vault.read|write|delete``; denies as ``authz.deny``)
with the name and key version, never the value.
"""

from __future__ import annotations

from typing import Any

import anyio.to_thread
from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from garrison.audit.event import Outcome
from garrison.errors import GarrisonError, NotFoundError
from garrison.gateway.requests import admit, authorize, client, parse_body, services
from garrison.policy import Resource
from garrison.principal import Principal
from garrison.vault.store import MAX_VALUE_BYTES, validate_name

_MAX_NOTE = 400


class PutSecret(BaseModel):
    model_config = ConfigDict(extra="forbid")

    value: str = Field(max_length=MAX_VALUE_BYTES)


def _note(request: Request, header: str, param: str) -> str | None:
    """A justification or reason: header first, then the query parameter; trimmed and capped."""
    raw = request.headers.get(header) or request.query_params.get(param)
    text = raw.strip()[:_MAX_NOTE] if raw else ""
    return text or None


async def _gate(
    request: Request, action: str, params: dict[str, Any] | None = None
) -> tuple[Principal, str | None, str]:
    """Who, in which tenant, on which name: or the 401/403/422 that answers the request."""
    admission = await admit(request, action, params=params)
    name = validate_name(request.path_params["name"])
    tenant = admission.tenant
    resource = Resource(type="secret", id=name, tenant=tenant)
    await authorize(request, admission, action, resource=resource, params=params)
    assert admission.principal is not None  # the secret actions all need authentication
    return admission.principal, tenant, name


async def _audit(
    request: Request,
    who: Principal,
    tenant: str | None,
    action: str,
    outcome: Outcome,
    reason: str | None = None,
    **details: Any,
) -> None:
    c = client(request)
    await services(request).audit.record(
        c.event(
            action,
            outcome,
            actor=who.sub,
            tenant=tenant,
            reason=reason,
            details=details,
        )
    )


async def put_secret(request: Request) -> JSONResponse:
    who, tenant, name = await _gate(request, "secret.write")
    body = await parse_body(request, PutSecret)
    vault = services(request).vault
    info, created = await anyio.to_thread.run_sync(
        lambda: vault.put(tenant, name, body.value, actor=who.sub)
    )
    await _audit(
        request,
        who,
        tenant,
        "vault.write",
        "success",
        name=name,
        key_version=info.key_version,
        created=created,
    )
    return JSONResponse(info.public(), status_code=201 if created else 200)


async def get_secret(request: Request) -> JSONResponse:
    justification = _note(request, "x-justification", "justification")
    who, tenant, name = await _gate(request, "secret.read", {"justification": justification})
    vault = services(request).vault
    try:
        info, value = await anyio.to_thread.run_sync(vault.get, tenant, name)
    except GarrisonError as exc:
        outcome: Outcome = "failure" if isinstance(exc, NotFoundError) else "error"
        await _audit(
            request,
            who,
            tenant,
            "vault.read",
            outcome,
            name=name,
            justification=justification,
            reason=exc.title.lower(),
        )
        raise
    await _audit(
        request,
        who,
        tenant,
        "vault.read",
        "success",
        name=name,
        key_version=info.key_version,
        justification=justification,
    )
    return JSONResponse({**info.public(), "value": value})


async def delete_secret(request: Request) -> Response:
    reason = _note(request, "x-reason", "reason")
    who, tenant, name = await _gate(request, "secret.delete", {"reason": reason})
    vault = services(request).vault
    try:
        info = await anyio.to_thread.run_sync(vault.delete, tenant, name)
    except NotFoundError:
        await _audit(
            request,
            who,
            tenant,
            "vault.delete",
            "failure",
            name=name,
            reason="not found",
        )
        raise
    await _audit(
        request,
        who,
        tenant,
        "vault.delete",
        "success",
        name=name,
        reason=reason,
        key_version=info.key_version,
    )
    return Response(status_code=204)


def routes() -> list[BaseRoute]:
    return [
        Route("/v1/secrets/{name}", put_secret, methods=["PUT"]),
        Route("/v1/secrets/{name}", get_secret, methods=["GET"]),
        Route("/v1/secrets/{name}", delete_secret, methods=["DELETE"]),
    ]
