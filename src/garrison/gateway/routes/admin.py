"""``/admin/*``: users, API keys, signing keys (A6, A7, A12). Admin JWT only (Z5)."""

from __future__ import annotations

from typing import Any

import anyio.to_thread
from pydantic import BaseModel, ConfigDict, Field, StrictBool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from garrison.app import Services
from garrison.errors import ForbiddenError
from garrison.gateway.authz import record_deny
from garrison.gateway.requests import acting_tenant, admin, client, parse_body, services
from garrison.identity.apikeys import parse_duration
from garrison.identity.users import User, validate_tenant
from garrison.principal import Principal
from garrison.tenancy import TENANT_MISMATCH, same_tenant


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CreateUser(_Body):
    username: str = Field(min_length=1, max_length=150)
    password: str = Field(min_length=8, max_length=1024)
    email: str | None = Field(None, max_length=320)
    roles: list[str] = Field(default_factory=lambda: ["user"], max_length=32)
    tenant: str | None = Field(None, max_length=100)


class PatchUser(_Body):
    active: bool


class CreateApiKey(_Body):
    user: str = Field(min_length=1, max_length=150)
    scopes: list[str] = Field(min_length=1, max_length=64)
    name: str = Field("", max_length=200)
    expires_in: str | None = Field(None, max_length=16)


class RotateKeys(_Body):
    #: strict: ``"yes"`` or ``1`` must not trigger (or ``"no"`` silently skip) an emergency rotation
    emergency: StrictBool = False


async def _scope_tenant(request: Request) -> str | None:
    """The tenant an admin acts in (T1): its own, or for a platform admin the X-Tenant-ID it
    names; None is platform scope. ``gateway.requests.principal`` resolved it already."""
    return await acting_tenant(request)


async def _check_same_tenant(request: Request, who: Principal, target: str | None) -> None:
    """An admin reaches only records of the tenant it acts in; platform records only in platform
    scope (T3). A platform admin names the tenant with X-Tenant-ID to act in it."""
    acting = await _scope_tenant(request)
    if not same_tenant(acting, target):
        reasons = [TENANT_MISMATCH]
        await record_deny(services(request), who, reasons, client(request), tenant=acting)
        raise ForbiddenError("the record belongs to another tenant", reasons=reasons)


async def _audit(request: Request, who: Principal, action: str, **details: Any) -> None:
    c = client(request)
    await services(request).audit.record(
        c.event(
            action,
            "success",
            actor=who.sub,
            tenant=await _scope_tenant(request),
            details=details,
        )
    )


async def list_users(request: Request) -> JSONResponse:
    await admin(request)
    tenant = await _scope_tenant(request)
    found = await anyio.to_thread.run_sync(services(request).users.list, tenant)
    return JSONResponse({"users": [u.public() for u in found]})


async def create_user(request: Request) -> JSONResponse:
    who = await admin(request)
    body = await parse_body(request, CreateUser)
    acting = await _scope_tenant(request)
    tenant = validate_tenant(body.tenant) if body.tenant else acting
    if who.tenant is not None or acting is not None:  # platform scope may name any tenant
        await _check_same_tenant(request, who, tenant)
    users = services(request).users

    def create() -> User:
        return users.create(
            body.username, body.password, email=body.email, roles=tuple(body.roles), tenant=tenant
        )

    user = await anyio.to_thread.run_sync(create)
    await _audit(request, who, "admin.user.create", user_id=user.id, username=user.username)
    return JSONResponse(user.public(), status_code=201)


async def _target(request: Request, who: Principal) -> User:
    users = services(request).users
    user = await anyio.to_thread.run_sync(users.get, request.path_params["user_id"])
    await _check_same_tenant(request, who, user.tenant)
    return user


async def patch_user(request: Request) -> JSONResponse:
    who = await admin(request)
    body = await parse_body(request, PatchUser)
    user = await _target(request, who)
    updated = await anyio.to_thread.run_sync(
        services(request).users.set_active, user.id, body.active
    )
    action = "admin.user.enable" if body.active else "admin.user.disable"
    await _audit(request, who, action, user_id=user.id)
    return JSONResponse(updated.public())


async def revoke_sessions(request: Request) -> JSONResponse:
    who = await admin(request)
    user = await _target(request, who)
    count = await anyio.to_thread.run_sync(services(request).users.revoke_sessions, user.id)
    await _audit(request, who, "admin.user.revoke_sessions", user_id=user.id, families=count)
    return JSONResponse({"user_id": user.id, "revoked_sessions": count})


async def create_api_key(request: Request) -> JSONResponse:
    who = await admin(request)
    body = await parse_body(request, CreateApiKey)
    svc = services(request)
    owner = await anyio.to_thread.run_sync(svc.users.resolve, body.user)
    await _check_same_tenant(request, who, owner.tenant)
    expires = parse_duration(body.expires_in) if body.expires_in else None

    def create() -> tuple[str, Any]:
        return svc.api_keys.create(
            owner.id, tuple(body.scopes), tenant=owner.tenant, name=body.name, expires_in=expires
        )

    secret, key = await anyio.to_thread.run_sync(create)
    await _audit(request, who, "admin.api_key.create", key_id=key.id, user_id=owner.id)
    return JSONResponse({**key.public(), "key": secret}, status_code=201)


async def delete_api_key(request: Request) -> Response:
    who = await admin(request)
    svc = services(request)
    key = await anyio.to_thread.run_sync(svc.api_keys.get, request.path_params["key_id"])
    await _check_same_tenant(request, who, key.tenant)
    await anyio.to_thread.run_sync(svc.api_keys.revoke, key.id)
    await _audit(request, who, "admin.api_key.revoke", key_id=key.id)
    return Response(status_code=204)


async def rotate_keys(request: Request) -> JSONResponse:
    who = await admin(request)
    if who.tenant is not None:
        raise ForbiddenError(reasons=["signing keys are platform-wide: platform admin required"])
    body = await parse_body(request, RotateKeys, optional=True)
    svc = services(request)
    kid = await anyio.to_thread.run_sync(lambda: svc.keyring.rotate(emergency=body.emergency))
    svc.bus.publish("keys", kid)
    await _audit(request, who, "admin.keys.rotate", kid=kid, emergency=body.emergency)
    keys = await anyio.to_thread.run_sync(_key_list, svc)  # a database read: off the event loop
    return JSONResponse({"kid": kid, "emergency": body.emergency, "keys": keys})


def _key_list(svc: Services) -> list[dict[str, Any]]:
    return [
        {"kid": k.kid, "alg": k.alg, "status": k.status, "created_at": k.created_at}
        for k in svc.keyring.list()
    ]


def routes() -> list[BaseRoute]:
    return [
        Route("/admin/users", list_users, methods=["GET"]),
        Route("/admin/users", create_user, methods=["POST"]),
        Route("/admin/users/{user_id}", patch_user, methods=["PATCH"]),
        Route("/admin/users/{user_id}/revoke-sessions", revoke_sessions, methods=["POST"]),
        Route("/admin/api-keys", create_api_key, methods=["POST"]),
        Route("/admin/api-keys/{key_id}", delete_api_key, methods=["DELETE"]),
        Route("/admin/keys/rotate", rotate_keys, methods=["POST"]),
    ]
