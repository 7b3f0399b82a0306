"""``/auth/password`` and ``/auth/sessions``: the signed-in user's own account (A15, A16).

Each route admits its caller (Bearer token or session cookie, CSRF-checked on state changes) as a
registered self-service action, ``auth.password`` or ``auth.sessions``, decided by the policy like
every other; the work is ``garrison.identity.self_service``.
"""

from __future__ import annotations

import anyio.to_thread
from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from garrison.admission import Admission
from garrison.gateway.requests import admit, client, parse_body, services
from garrison.gateway.session_cookies import by_cookie, with_cookies
from garrison.identity.cookies import SessionCookies
from garrison.identity.password_policy import MAX_LENGTH
from garrison.identity.self_service import SelfService
from garrison.principal import Principal


class ChangePassword(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)

    current_password: str = Field(min_length=1, max_length=MAX_LENGTH)
    new_password: str = Field(max_length=MAX_LENGTH)  # too short: the policy says why (422)


def self_service(request: Request) -> SelfService:
    """The caller's own-account flows (the console's account page uses the same)."""
    svc = services(request)
    return SelfService(svc.users, svc.sessions, svc.auth.throttle.login, svc.audit)


def _caller(admission: Admission) -> Principal:
    assert admission.principal is not None  # self-service actions need authentication
    return admission.principal


async def change_password(request: Request) -> Response:
    who = _caller(await admit(request, "auth.password"))
    body = await parse_body(request, ChangePassword)
    await anyio.to_thread.run_sync(
        self_service(request).change_password,
        who,
        body.current_password,
        body.new_password,
        client(request),
    )
    return Response(status_code=204)


async def list_sessions(request: Request) -> JSONResponse:
    who = _caller(await admit(request, "auth.sessions"))
    found = await anyio.to_thread.run_sync(self_service(request).list_sessions, who)
    return JSONResponse(
        {"sessions": [info.public(who.session_id) for info in found]},
        headers={"Cache-Control": "no-store"},
    )


async def end_session(request: Request) -> Response:
    who = _caller(await admit(request, "auth.sessions"))
    session_id = request.path_params["session_id"]
    await anyio.to_thread.run_sync(
        self_service(request).end_session, who, session_id, client(request)
    )
    response = Response(status_code=204)
    if session_id == who.session_id and by_cookie(request):  # the browser ended its own session
        return with_cookies(response, SessionCookies.clear())
    return response


def routes() -> list[BaseRoute]:
    return [
        Route("/auth/password", change_password, methods=["POST"]),
        Route("/auth/sessions", list_sessions, methods=["GET"]),
        Route("/auth/sessions/{session_id}", end_session, methods=["DELETE"]),
    ]
