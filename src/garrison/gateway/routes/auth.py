"""``/auth/*``: login, refresh, logout, me, and the second factor (A1, A5, A13, A14)."""

from __future__ import annotations

from functools import partial
from typing import Literal

import anyio.to_thread
from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from garrison.admission import Admission
from garrison.errors import UnavailableError
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
from garrison.identity.second_factor import SecondFactor
from garrison.identity.service import MfaPending
from garrison.principal import Principal


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)


class LoginBody(_Body):
    username: str = Field(min_length=1, max_length=320)
    password: str = Field(min_length=1, max_length=1024)
    session: Literal["token", "cookie"] = "token"  # "cookie": a browser session (A9)


class MfaVerifyBody(_Body):
    mfa_token: str = Field(min_length=1, max_length=256)
    code: str = Field(min_length=1, max_length=64)


class MfaCodeBody(_Body):
    code: str = Field(min_length=1, max_length=64)


class MfaRemoveBody(_Body):
    current_password: str = Field(min_length=1, max_length=1024)
    code: str = Field(min_length=1, max_length=64)


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
        partial(
            svc.auth.sign_in, body.username, body.password, client(request), session=body.session
        )
    )
    if isinstance(pair, MfaPending):  # a second factor is awaited: no tokens, no cookies (A14)
        return JSONResponse(pair.body(), headers=_NO_STORE)
    if body.session == "cookie":
        return cookie_session_response(svc, pair)
    return JSONResponse(pair.body(), headers=_NO_STORE)


async def mfa_verify(request: Request) -> JSONResponse:
    """The second step of a login: the ``mfa_token`` and a TOTP or recovery code (A14)."""
    body = await parse_body(request, MfaVerifyBody)
    svc = services(request)
    pair, session = await anyio.to_thread.run_sync(
        svc.auth.complete_mfa, body.mfa_token, body.code, client(request)
    )
    if session == "cookie":
        check_origin(request, svc.settings.issuer)
        return cookie_session_response(svc, pair)
    return JSONResponse(pair.body(), headers=_NO_STORE)


async def mfa_enrol(request: Request) -> JSONResponse:
    who = _caller(await admit(request, "auth.mfa.enrol"))
    svc = services(request)
    user = await anyio.to_thread.run_sync(svc.users.get, who.sub)
    found = await anyio.to_thread.run_sync(_mfa(request).enrol, user, client(request))
    return JSONResponse(found, headers=_NO_STORE)


async def mfa_confirm(request: Request) -> JSONResponse:
    who = _caller(await admit(request, "auth.mfa.confirm"))
    body = await parse_body(request, MfaCodeBody)
    svc = services(request)
    user = await anyio.to_thread.run_sync(svc.users.get, who.sub)
    codes = await anyio.to_thread.run_sync(_mfa(request).confirm, user, body.code, client(request))
    return JSONResponse({"recovery_codes": codes}, headers=_NO_STORE)


async def mfa_remove(request: Request) -> Response:
    who = _caller(await admit(request, "auth.mfa.remove"))
    body = await parse_body(request, MfaRemoveBody)
    svc = services(request)
    user = await anyio.to_thread.run_sync(svc.users.get, who.sub)
    await anyio.to_thread.run_sync(
        _mfa(request).remove, user, body.current_password, body.code, client(request)
    )
    return Response(status_code=204)


def _mfa(request: Request) -> SecondFactor:
    mfa = services(request).auth.mfa
    if mfa is None:
        raise UnavailableError("multi-factor authentication is not configured")
    return mfa


async def refresh(request: Request) -> JSONResponse:
    svc = services(request)
    if not (await request.body()).strip() and has_session_cookies(request):
        token = await cookie_refresh_token(request, svc, client(request))  # CSRF-checked (A9)
        pair = await anyio.to_thread.run_sync(svc.auth.refresh, token, client(request))
        return cookie_session_response(svc, pair)
    body = await parse_body(request, RefreshBody)
    grant = await anyio.to_thread.run_sync(
        svc.auth.refresh_grant, body.refresh_token, client(request)
    )  # Garrison's own, or GoTrue's when SUPABASE_GOTRUE_URL is set (seed 001)
    return JSONResponse(grant.body(), headers=_NO_STORE)


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
        Route("/auth/mfa/verify", mfa_verify, methods=["POST"]),
        Route("/auth/mfa/totp", mfa_enrol, methods=["POST"]),
        Route("/auth/mfa/totp", mfa_remove, methods=["DELETE"]),
        Route("/auth/mfa/totp/confirm", mfa_confirm, methods=["POST"]),
    ]
