"""``/auth/*``: login, refresh, logout, me (A1, A5, A13)."""

from __future__ import annotations

import anyio.to_thread
from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from garrison.gateway.requests import client, parse_body, principal, services


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)


class LoginBody(_Body):
    username: str = Field(min_length=1, max_length=320)
    password: str = Field(min_length=1, max_length=1024)


class RefreshBody(_Body):
    refresh_token: str = Field(min_length=1, max_length=256)


class LogoutBody(_Body):
    refresh_token: str | None = Field(None, max_length=256)


_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


async def login(request: Request) -> JSONResponse:
    body = await parse_body(request, LoginBody)
    svc = services(request)
    pair = await anyio.to_thread.run_sync(
        svc.auth.login, body.username, body.password, client(request)
    )
    return JSONResponse(pair.body(), headers=_NO_STORE)


async def refresh(request: Request) -> JSONResponse:
    body = await parse_body(request, RefreshBody)
    svc = services(request)
    pair = await anyio.to_thread.run_sync(svc.auth.refresh, body.refresh_token, client(request))
    return JSONResponse(pair.body(), headers=_NO_STORE)


async def logout(request: Request) -> Response:
    who = await principal(request)
    body = await parse_body(request, LogoutBody, optional=True)
    svc = services(request)
    await anyio.to_thread.run_sync(
        svc.auth.logout, who.session_id, body.refresh_token, who.sub, client(request)
    )
    return Response(status_code=204)


async def me(request: Request) -> JSONResponse:
    who = await principal(request)
    return JSONResponse(
        {
            "sub": who.sub,
            "username": who.username,
            "email": who.email,
            "roles": sorted(who.roles),
            "tenant": who.tenant,
        }
    )


def routes() -> list[BaseRoute]:
    return [
        Route("/auth/login", login, methods=["POST"]),
        Route("/auth/refresh", refresh, methods=["POST"]),
        Route("/auth/logout", logout, methods=["POST"]),
        Route("/auth/me", me, methods=["GET"]),
    ]
