"""``/admin/*``: users, API keys, signing keys (A6, A7, A12, V4).

Each route admits its caller as a registered action (``admin.users.create`` ...: the same
pipeline and Cedar policy as every other path, so API-key scopes, tenant binding and
``REQUIRE_JWT_FOR_ADMIN`` hold here as at ``/verify``), parses its body, and calls the one use case
(``garrison.usecases``) that the CLI calls too.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from garrison.errors import ValidationError
from garrison.gateway.requests import admit, parse_body, services


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CreateUser(_Body):
    username: str = Field(min_length=1, max_length=150)
    password: str = Field(min_length=8, max_length=1024)
    email: str | None = Field(None, max_length=320)
    roles: list[str] = Field(default_factory=lambda: ["user"], min_length=1, max_length=32)
    tenant: str | None = Field(None, max_length=100)


class PatchUser(_Body):
    active: bool | None = None
    roles: list[str] | None = Field(None, min_length=1, max_length=32)


class DeleteUser(_Body):
    reason: str | None = Field(None, max_length=400)  # required: the policy says so, with why


class CreateApiKey(_Body):
    user: str = Field(min_length=1, max_length=150)
    scopes: list[str] = Field(min_length=1, max_length=64)
    name: str = Field("", max_length=200)
    expires_in: str | None = Field(None, max_length=16)


class RotateKeys(_Body):
    #: strict: ``"yes"`` or ``1`` must not trigger (or ``"no"`` silently skip) an emergency rotation
    emergency: bool = False


async def list_users(request: Request) -> JSONResponse:
    actor = await admit(request, "admin.users.list")
    found = await services(request).admin.list_users(actor)
    return JSONResponse({"users": [u.public() for u in found]})


async def create_user(request: Request) -> JSONResponse:
    actor = await admit(request, "admin.users.create")
    body = await parse_body(request, CreateUser)
    user = await services(request).admin.create_user(
        actor,
        username=body.username,
        password=body.password,
        email=body.email,
        roles=tuple(body.roles),
        tenant=body.tenant,
    )
    return JSONResponse(user.public(), status_code=201)


async def patch_user(request: Request) -> JSONResponse:
    actor = await admit(request, "admin.users.update")
    body = await parse_body(request, PatchUser)
    updated = await services(request).admin.update_user(
        actor,
        request.path_params["user_id"],
        active=body.active,
        roles=tuple(body.roles) if body.roles is not None else None,
    )
    return JSONResponse(updated.public())


async def revoke_sessions(request: Request) -> JSONResponse:
    actor = await admit(request, "admin.users.revoke_sessions")
    user, revoked = await services(request).admin.revoke_sessions(
        actor, request.path_params["user_id"]
    )
    return JSONResponse(
        {
            "user_id": user.id,
            "revoked_sessions": revoked.sessions,
            "revoked_api_keys": revoked.api_keys,
        }
    )


async def reset_password(request: Request) -> JSONResponse:
    actor = await admit(request, "admin.users.reset_password")
    _user, temporary, _ended = await services(request).admin.reset_password(
        actor, request.path_params["user_id"]
    )
    return JSONResponse({"temporary_password": temporary}, headers={"Cache-Control": "no-store"})


async def export_user(request: Request) -> JSONResponse:
    actor = await admit(request, "admin.users.export")
    _user, document = await services(request).admin.export_user(
        actor, request.path_params["user_id"]
    )
    return JSONResponse(document, headers={"Cache-Control": "no-store"})


async def delete_user(request: Request) -> Response:
    body = await parse_body(request, DeleteUser, optional=True)
    actor = await admit(request, "admin.users.delete", params={"reason": body.reason})
    await services(request).admin.delete_user(
        actor, request.path_params["user_id"], reason=body.reason or ""
    )
    return Response(status_code=204)


async def create_api_key(request: Request) -> JSONResponse:
    actor = await admit(request, "admin.api_keys.create")
    body = await parse_body(request, CreateApiKey)
    secret, key = await services(request).admin.create_api_key(
        actor, body.user, scopes=tuple(body.scopes), name=body.name, expires_in=body.expires_in
    )
    return JSONResponse({**key.public(), "key": secret}, status_code=201)


async def list_api_keys(request: Request) -> JSONResponse:
    actor = await admit(request, "admin.api_keys.list")
    owner = request.query_params.get("user")
    if not owner:
        raise ValidationError("which user?", reasons=["user: a user id is required"])
    _owner, found = await services(request).admin.list_api_keys(actor, owner)
    return JSONResponse({"api_keys": [k.public() for k in found]})


async def delete_api_key(request: Request) -> Response:
    actor = await admit(request, "admin.api_keys.revoke")
    await services(request).admin.revoke_api_key(actor, request.path_params["key_id"])
    return Response(status_code=204)


async def rotate_keys(request: Request) -> JSONResponse:
    actor = await admit(request, "admin.keys.rotate")
    body = await parse_body(request, RotateKeys, optional=True)
    rotation = await services(request).admin.rotate_keys(actor, emergency=body.emergency)
    return JSONResponse(
        {"kid": rotation.kid, "emergency": rotation.emergency, "keys": rotation.keys}
    )


def routes() -> list[BaseRoute]:
    return [
        Route("/admin/users", list_users, methods=["GET"]),
        Route("/admin/users", create_user, methods=["POST"]),
        Route("/admin/users/{user_id}", patch_user, methods=["PATCH"]),
        Route("/admin/users/{user_id}", delete_user, methods=["DELETE"]),
        Route("/admin/users/{user_id}/export", export_user, methods=["GET"]),
        Route("/admin/users/{user_id}/revoke-sessions", revoke_sessions, methods=["POST"]),
        Route("/admin/users/{user_id}/reset-password", reset_password, methods=["POST"]),
        Route("/admin/api-keys", list_api_keys, methods=["GET"]),
        Route("/admin/api-keys", create_api_key, methods=["POST"]),
        Route("/admin/api-keys/{key_id}", delete_api_key, methods=["DELETE"]),
        Route("/admin/keys/rotate", rotate_keys, methods=["POST"]),
    ]
