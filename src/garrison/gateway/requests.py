"""Request helpers shared by the routers: body parsing, the caller's identity, client facts."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import TypeVar

import anyio.to_thread
from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError
from starlette.requests import Request

from garrison.app import Services
from garrison.errors import AuthenticationError, BadRequestError, ForbiddenError, ValidationError
from garrison.gateway.authz import record_deny
from garrison.gateway.session_cookies import check_cookie_request, session_credential
from garrison.identity.authn import ADMIN_ROLE
from garrison.identity.service import Client
from garrison.principal import Principal
from garrison.tenancy import resolve_tenant

M = TypeVar("M", bound=BaseModel)


def services(request: Request) -> Services:
    svc: Services = request.app.state.services
    return svc


async def parse_body(request: Request, model: type[M], *, optional: bool = False) -> M:
    raw = await request.body()
    if not raw.strip():
        if optional:
            return model()
        raise BadRequestError("a JSON body is required")
    ctype = request.headers.get("content-type", "application/json").split(";")[0].strip()
    if ctype not in ("application/json", ""):
        raise BadRequestError("content type must be application/json")
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise BadRequestError("body is not valid JSON") from None
    try:
        return model.model_validate(data)
    except PydanticValidationError as exc:
        reasons = [
            f"{'.'.join(str(p) for p in err['loc']) or 'body'}: {err['msg']}"
            for err in exc.errors()
        ]
        raise ValidationError("request body does not match the contract", reasons=reasons) from None


def client_ip(request: Request) -> str | None:
    """The client address, as resolved by the proxy-header middleware (E5)."""
    ip = request.scope.get("garrison.client_ip")
    if isinstance(ip, str):
        return ip
    return request.client.host if request.client else None


def client(request: Request) -> Client:
    return Client(
        ip=client_ip(request),
        user_agent=request.headers.get("user-agent"),
        request_id=request.scope.get("garrison.request_id"),
    )


async def principal(request: Request) -> Principal:
    """The authenticated caller, or ``AuthenticationError`` (401)."""
    cached = request.scope.get("garrison.principal")
    if isinstance(cached, Principal):
        return cached
    authn = services(request).authenticator
    from_cookie = session_credential(request)  # only without an Authorization header (A9)
    header = from_cookie or request.headers.get("authorization")
    try:
        found = authn.authenticate_cached(header)
        if found is None:
            found = await anyio.to_thread.run_sync(authn.authenticate, header)
    except AuthenticationError as exc:
        services(request).metrics.auth_failure(exc.code)  # L6: spikes alert, by reason
        raise
    if from_cookie is not None:
        await check_cookie_request(request, services(request), found, client(request))
    found = _key_never_admin(services(request), found)
    await _resolve_tenant(request, found)
    request.scope["garrison.principal"] = found
    return found


def _key_never_admin(svc: Services, who: Principal) -> Principal:
    """With ``REQUIRE_JWT_FOR_ADMIN`` an API key alone is never admin (A7): not on /admin, and
    not for the admin role's other powers either (the vault, naming another tenant)."""
    if who.via != "api_key" or ADMIN_ROLE not in who.roles:
        return who
    if not svc.settings.jwt_required_for_admin:
        return who
    return replace(who, roles=who.roles - {ADMIN_ROLE})


#: Paths that never need X-Tenant-ID (T2): login, refresh, logout, health and discovery.
TENANT_EXEMPT_PATHS = frozenset(
    {"/auth/login", "/auth/refresh", "/auth/logout", "/healthz", "/readyz"}
)


async def _resolve_tenant(request: Request, who: Principal) -> None:
    """Set ``garrison.tenant`` (the tenant the request acts in) or deny (T1, T2)."""
    path = request.url.path
    header = request.headers.get("x-tenant-id")
    exempt = path in TENANT_EXEMPT_PATHS or path.startswith("/.well-known/")
    svc = services(request)
    try:
        tenant = resolve_tenant(
            who, header, required=svc.settings.tenant_header_required and not exempt
        )
    except ForbiddenError as exc:
        await record_deny(svc, who, exc.reasons, client(request), tenant=who.tenant)
        raise
    request.scope["garrison.tenant"] = tenant


async def acting_tenant(request: Request) -> str | None:
    """The tenant the authenticated caller acts in (None: platform scope)."""
    await principal(request)
    tenant = request.scope.get("garrison.tenant")
    return tenant if isinstance(tenant, str) else None


async def admin(request: Request) -> Principal:
    """An admin caller (Z5); with ``REQUIRE_JWT_FOR_ADMIN`` an API key alone never is (A7)."""
    who = await principal(request)
    if who.via == "api_key" and services(request).settings.jwt_required_for_admin:
        raise ForbiddenError(
            "API keys cannot reach admin endpoints", reasons=["admin requires a JWT"]
        )
    if "admin" not in who.roles:
        reasons = ["role mismatch: admin endpoints require admin"]
        await record_deny(services(request), who, reasons, client(request), action="admin.api")
        raise ForbiddenError(reasons=reasons)
    return who
