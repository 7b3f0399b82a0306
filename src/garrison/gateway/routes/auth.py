"""``/auth/*``: login, refresh, logout, me (A1, A5, A13)."""

from __future__ import annotations

from typing import Literal

import anyio.to_thread
from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from garrison.admission import Admission
from garrison.gateway.requests import admit, client, parse_body, services
from garrison.gateway.session_cookies import (
    by_cookie,
    check_origin,
    cookie_refresh_token,
    cookie_session_response,
    has_session_cookies,
    with_cookies,
)
from garrison.identity.cookies import SessionCookies
from garrison.principal import Principal


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)


class LoginBody(_Body):
    username: str = Field(min_length=1, max_length=320)
    password: str = Field(min_length=1, max_length=1024)
    session: Literal["token", "cookie"] = "token"  # "cookie": a browser session (A9)


class RefreshBody(_Body):
    refresh_token: str = Field(min_length=1, max_length=256)


class LogoutBody(_Body):
    refresh_token: str | None = Field(None, max_length=256)


_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


async def login(request: Request) -> JSONResponse:
    body = await parse_body(request, LoginBody)
    svc = services(request)
    if body.session == "cookie":
        check_origin(request, svc.settings.issuer)  # no login CSRF from another site
    pair = await anyio.to_thread.run_sync(
        svc.auth.login, body.username, body.password, client(request)
    )
    if body.session == "cookie":
        return cookie_session_response(svc, pair)
    return JSONResponse(pair.body(), headers=_NO_STORE)


async def refresh(request: Request) -> JSONResponse:
    svc = services(request)
    if not (await request.body()).strip() and has_session_cookies(request):
        token = await cookie_refresh_token(request, svc, client(request))  # CSRF-checked (A9)
        pair = await anyio.to_thread.run_sync(svc.auth.refresh, token, client(request))
        return cookie_session_response(svc, pair)
    body = await parse_body(request, RefreshBody)
    pair = await anyio.to_thread.run_sync(svc.auth.refresh, body.refresh_token, client(request))
    return JSONResponse(pair.body(), headers=_NO_STORE)


async def logout(request: Request) -> Response:
    who = _caller(await admit(request, "auth.self"))
    body = await parse_body(request, LogoutBody, optional=True)
    svc = services(request)
    await anyio.to_thread.run_sync(
        svc.auth.logout, who.session_id, body.refresh_token, who.sub, client(request)
    )
    if by_cookie(request):  # a Bearer logout leaves the browser's own session alone
        wipe = {"Clear-Site-Data": '"cache", "cookies", "storage"'}  # ASVS 14.3.1
        return with_cookies(Response(status_code=204, headers=wipe), SessionCookies.clear())
    return Response(status_code=204)


async def me(request: Request) -> JSONResponse:
    who = _caller(await admit(request, "auth.self"))
    return JSONResponse(
        {
            "sub": who.sub,
            "username": who.username,
            "email": who.email,
            "roles": sorted(who.roles),
            "tenant": who.tenant,
        }
    )


def _caller(admission: Admission) -> Principal:
    assert admission.principal is not None  # auth.self needs authentication
    return admission.principal


def routes() -> list[BaseRoute]:
    return [
        Route("/auth/login", login, methods=["POST"]),
        Route("/auth/refresh", refresh, methods=["POST"]),
        Route("/auth/logout", logout, methods=["POST"]),
        Route("/auth/me", me, methods=["GET"]),
    ]
