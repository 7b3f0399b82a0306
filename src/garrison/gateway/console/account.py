"""The self-service pages (A14, A15, A16): every signed-in user's own account.

Change the password (``SelfService.change_password``, as ``POST /auth/password``), enrol, confirm
and remove a TOTP authenticator (``SecondFactor``, as ``/auth/mfa/totp``), list and end one's own
sessions (as ``/auth/sessions``), and hold API keys of one's own when the role allows
(``auth.api_keys``). Each handler is admitted as the same registered action as its API twin, so
the policy decides here exactly as there. The QR code of an enrolment is drawn on the server
(``segno``) as an SVG ``data:`` image, which the CSP's ``img-src 'self' data:`` allows: no script,
no third party, the seed never leaves this response.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

import anyio.to_thread
import segno
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from garrison.admission import Admission
from garrison.errors import ConflictError, UnavailableError, ValidationError
from garrison.gateway.console.pages import (
    ACCOUNT,
    CHANGE_PAGE,
    NO_STORE,
    SIGN_IN,
    admin,
    form,
    one,
    page,
    render,
    validated,
    words,
)
from garrison.gateway.requests import admit, authorize, client, services
from garrison.gateway.routes.admin import CreateApiKey
from garrison.gateway.routes.self_service import ChangePassword, self_service
from garrison.gateway.session_cookies import session_cookies, with_cookies
from garrison.identity import totp
from garrison.identity.cookies import REFRESH_COOKIE, SessionCookies
from garrison.identity.second_factor import SecondFactor
from garrison.identity.users import User
from garrison.principal import Principal

#: What a redirect back to the account page reports (a fixed text per key: nothing reflected).
DONE = {
    "password": "Password changed. Your other sessions were ended.",
    "mfa-removed": "The authenticator was removed: signing in asks for your password only.",
    "session-ended": "Session ended.",
    "key-revoked": "API key revoked.",
}


def _who(admission: Admission) -> Principal:
    assert admission.principal is not None  # every action here needs authentication
    return admission.principal


def _mfa(request: Request) -> SecondFactor:
    mfa = services(request).auth.mfa
    if mfa is None:
        raise UnavailableError("multi-factor authentication is not configured")
    return mfa


async def _user(request: Request, who: Principal) -> User:
    return await anyio.to_thread.run_sync(services(request).users.get, who.sub)


def qr_data_uri(text: str) -> str:
    """``text`` as a QR code: an SVG ``data:`` URI, drawn here (no third party sees the seed)."""
    code = segno.make(text, error="m")
    uri: str = code.svg_data_uri(scale=5, border=4, dark="#000", light="#fff")
    return uri


def _grouped(secret: str) -> str:
    return " ".join(secret[i : i + 4] for i in range(0, len(secret), 4))


# -- the account page ----------------------------------------------------------------------------
async def _account(
    request: Request,
    actor: Admission,
    *,
    status: int = 200,
    notice: str | None = None,
    secret: str | None = None,
) -> Response:
    who = _who(actor)
    svc = services(request)
    await authorize(request, actor, "auth.sessions")
    sessions = await anyio.to_thread.run_sync(self_service(request).list_sessions, who)
    mfa = svc.auth.mfa
    factor = await anyio.to_thread.run_sync(mfa.store.status, who.sub) if mfa else "unavailable"
    # the key section is shown when the policy lets this caller hold keys (not audited: nothing
    # is done; listing, creating and revoking are each decided and audited on their own)
    may_keys = svc.authorizer.decide(who, "auth.api_keys", tenant=actor.tenant).allow
    keys = await admin(request).own_api_keys(actor) if may_keys else []
    return render(
        request,
        "account.html",
        actor=actor,
        status=status,
        notice=notice,
        section="account",
        title="Your account",
        who=who,
        sessions=[info.public(who.session_id) for info in sessions],
        factor=factor,
        may_keys=may_keys,
        keys=keys,
        secret=secret,
        now=time.time(),
    )


@page
async def account_page(request: Request) -> Response:
    actor = await admit(request, "auth.self")
    done = DONE.get(request.query_params.get("done", ""))
    return await _account(request, actor, notice=done)


def _back(done: str) -> Response:
    return RedirectResponse(f"{ACCOUNT}?done={done}", status_code=303, headers=NO_STORE)


# -- the password --------------------------------------------------------------------------------
@page
async def password_page(request: Request) -> Response:
    actor = await admit(request, "auth.password")
    return _password_form(request, actor)


def _password_form(
    request: Request, actor: Admission, *, status: int = 200, error: Exception | None = None
) -> Response:
    required = _who(actor).password_change_required
    return render(
        request,
        "password.html",
        actor=actor,
        status=status,
        error=error,
        section="account",
        title="Change your password",
        required=required,
    )


@page
async def change_password(request: Request) -> Response:
    """``POST /auth/password``'s use case; then the browser's session is refreshed, so that its
    new token no longer says a change is required."""
    actor = await admit(request, "auth.password")
    who = _who(actor)
    fields = await form(request)
    body = validated(
        ChangePassword,
        {
            "current_password": one(fields, "current_password"),
            "new_password": one(fields, "new_password"),
        },
    )
    if one(fields, "repeat_password") != body.new_password:
        exc = ValidationError(
            "the new password was not repeated exactly",
            reasons=["repeat_password: does not match new_password"],
        )
        return _password_form(request, actor, status=422, error=exc)
    svc = services(request)
    await anyio.to_thread.run_sync(
        self_service(request).change_password,
        who,
        body.current_password,
        body.new_password,
        client(request),
    )
    response = _back("password")
    refresh = request.cookies.get(REFRESH_COOKIE)
    if refresh:  # the kept session's next token, without pwd_change_required (A15)
        pair = await anyio.to_thread.run_sync(svc.auth.refresh, refresh, client(request))
        with_cookies(response, session_cookies(svc, pair))
    return response


# -- the second factor ---------------------------------------------------------------------------
def _setup(
    request: Request,
    actor: Admission,
    secret: str,
    uri: str,
    *,
    status: int = 200,
    error: Exception | None = None,
) -> Response:
    return render(
        request,
        "mfa_setup.html",
        actor=actor,
        status=status,
        error=error,
        section="account",
        title="Set up an authenticator",
        qr=qr_data_uri(uri),
        secret=_grouped(secret),
        uri=uri,
    )


@page
async def mfa_enrol(request: Request) -> Response:
    """``POST /auth/mfa/totp``'s use case: a pending authenticator, its QR code shown this once."""
    actor = await admit(request, "auth.mfa.enrol")
    await form(request)
    user = await _user(request, _who(actor))
    found = await anyio.to_thread.run_sync(_mfa(request).enrol, user, client(request))
    return _setup(request, actor, found["secret"], found["otpauth_uri"])


@page
async def mfa_confirm(request: Request) -> Response:
    """``POST /auth/mfa/totp/confirm``'s use case: the first code; the recovery codes, once."""
    actor = await admit(request, "auth.mfa.confirm")
    fields = await form(request)
    code = "".join(one(fields, "code").split())
    user = await _user(request, _who(actor))
    mfa = _mfa(request)
    try:
        codes = await anyio.to_thread.run_sync(mfa.confirm, user, code[:64], client(request))
    except ValidationError as exc:  # a wrong code: the same pending enrolment, once more
        pending = await anyio.to_thread.run_sync(mfa.store.pending_seed, user.id)
        if pending is None:
            raise ConflictError("no pending TOTP enrolment; start again") from None
        uri = _provisioning_uri(mfa, pending[0], user)
        return _setup(request, actor, pending[0], uri, status=422, error=exc)
    return render(
        request,
        "mfa_done.html",
        actor=actor,
        section="account",
        title="Authenticator confirmed",
        codes=codes,
    )


def _provisioning_uri(mfa: SecondFactor, seed: str, user: User) -> str:
    return totp.provisioning_uri(seed, user.username, mfa.issuer)


@page
async def mfa_remove(request: Request) -> Response:
    """``DELETE /auth/mfa/totp``'s use case: the current password and a code, checked afresh."""
    actor = await admit(request, "auth.mfa.remove")
    fields = await form(request)
    password = one(fields, "current_password")[:1024]
    code = "".join(one(fields, "code").split())[:64]
    if not (password and code):
        raise ValidationError(
            "re-authenticate to remove the authenticator",
            reasons=["current_password and code: both are required"],
        )
    user = await _user(request, _who(actor))
    await anyio.to_thread.run_sync(_mfa(request).remove, user, password, code, client(request))
    return _back("mfa-removed")


# -- sessions ------------------------------------------------------------------------------------
@page
async def end_session(request: Request) -> Response:
    """``DELETE /auth/sessions/{id}``'s use case; ending this very session signs the browser
    out."""
    actor = await admit(request, "auth.sessions")
    await form(request)
    who = _who(actor)
    session_id = request.path_params["session_id"]
    await anyio.to_thread.run_sync(
        self_service(request).end_session, who, session_id, client(request)
    )
    if session_id == who.session_id:
        response = RedirectResponse(SIGN_IN, status_code=303, headers=NO_STORE)
        return with_cookies(response, SessionCookies.clear())
    return _back("session-ended")


# -- own API keys --------------------------------------------------------------------------------
def _key_fields(fields: Mapping[str, list[str]], owner: str) -> CreateApiKey:
    return validated(
        CreateApiKey,
        {
            "user": owner,
            "scopes": words(one(fields, "scopes")),
            "name": one(fields, "name"),
            "expires_in": one(fields, "expires_in").strip() or None,
        },
    )


@page
async def create_key(request: Request) -> Response:
    actor = await admit(request, "auth.api_keys")
    fields = await form(request)
    body = _key_fields(fields, _who(actor).sub)
    secret, key = await admin(request).create_own_api_key(
        actor, scopes=tuple(body.scopes), name=body.name, expires_in=body.expires_in
    )
    notice = f"API key {key.id} created: copy it now, it is not shown again."
    return await _account(request, actor, status=201, notice=notice, secret=secret)


@page
async def revoke_key(request: Request) -> Response:
    actor = await admit(request, "auth.api_keys")
    await form(request)
    await admin(request).revoke_own_api_key(actor, request.path_params["key_id"])
    return _back("key-revoked")


def routes() -> list[BaseRoute]:
    return [
        Route(ACCOUNT, account_page, methods=["GET"]),
        Route(CHANGE_PAGE, password_page, methods=["GET"]),
        Route(CHANGE_PAGE, change_password, methods=["POST"]),
        Route("/console/account/mfa", mfa_enrol, methods=["POST"]),
        Route("/console/account/mfa/confirm", mfa_confirm, methods=["POST"]),
        Route("/console/account/mfa/remove", mfa_remove, methods=["POST"]),
        Route("/console/account/sessions/{session_id}/end", end_session, methods=["POST"]),
        Route("/console/account/api-keys", create_key, methods=["POST"]),
        Route("/console/account/api-keys/{key_id}/revoke", revoke_key, methods=["POST"]),
    ]
