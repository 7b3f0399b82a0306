"""Request helpers shared by the routers: body parsing, the caller's identity, client facts."""

from __future__ import annotations

import json
from typing import TypeVar

import anyio.to_thread
from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError
from starlette.requests import Request

from garrison.app import Services
from garrison.errors import BadRequestError, ForbiddenError, ValidationError
from garrison.identity.service import Client
from garrison.principal import Principal

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
    header = request.headers.get("authorization")
    found = authn.authenticate_cached(header)
    if found is None:
        found = await anyio.to_thread.run_sync(authn.authenticate, header)
    request.scope["garrison.principal"] = found
    return found


async def admin(request: Request) -> Principal:
    """An admin caller (Z5); with ``REQUIRE_JWT_FOR_ADMIN`` an API key alone never is (A7)."""
    who = await principal(request)
    if who.via == "api_key" and services(request).settings.jwt_required_for_admin:
        raise ForbiddenError(
            "API keys cannot reach admin endpoints", reasons=["admin requires a JWT"]
        )
    if "admin" not in who.roles:
        raise ForbiddenError(reasons=["role mismatch: admin endpoints require admin"])
    return who
