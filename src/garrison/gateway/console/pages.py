"""The console's routes: sign-in, users, API keys, signing keys, audit (U1, A9).

Every handler is ``admit`` (the pipeline: session cookie, CSRF field, tenant, Cedar) and then one
use case; ``page`` turns the use case's ``GarrisonError`` into a page with its reasons.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, urlencode

import anyio.to_thread
import jinja2
from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from garrison.admission import Admission
from garrison.audit.checkpoint import stored_public_keys
from garrison.audit.query import OUTCOMES, AuditFilter, parse_time, preset, search
from garrison.audit.verify import verify_chain
from garrison.errors import (
    AuthenticationError,
    BadRequestError,
    ForbiddenError,
    GarrisonError,
    RateLimitedError,
    ValidationError,
)
from garrison.gateway.requests import admit, client, form_fields, is_form, services
from garrison.gateway.routes.admin import CreateApiKey, CreateUser, PatchUser
from garrison.gateway.session_cookies import check_origin, session_cookies, with_cookies
from garrison.identity.cookies import CSRF_COOKIE, REFRESH_COOKIE, SessionCookies
from garrison.identity.service import MfaPending, TokenPair
from garrison.usecases.admin import AdminActions

M = TypeVar("M", bound=BaseModel)
Handler = Callable[[Request], Awaitable[Response]]

_HERE = Path(__file__).parent
_STYLESHEET = (_HERE / "static" / "console.css").read_bytes()
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
#: The console's pages only: with the default ``no-referrer`` a browser posts their forms with
#: ``Origin: null``, which the pipeline (rightly) refuses as not our own site; ``same-origin``
#: names the real origin to ourselves and still sends nothing to any other.
_PAGE_HEADERS = {**NO_STORE, "Referrer-Policy": "same-origin"}
SIGN_IN = "/console"
LANDING = "/console/home"
HOME = "/console/users"
ACCOUNT = "/console/account"
CHANGE_PAGE = "/console/account/password"
#: The policy's reason while an administrator-set password awaits its change (A15)
CHANGE_REQUIRED = "password change required"
#: The header's sections, each shown when the policy allows its action to the signed-in caller
SECTIONS = (
    ("users", "/console/users", "Users", "admin.users.list"),
    ("keys", "/console/keys", "Signing keys", "admin.keys.list"),
    ("audit", "/console/audit", "Audit", "audit.read"),
    ("policies", "/console/policies", "Policies", "admin.policy.read"),
    ("doctor", "/console/doctor", "Doctor", "admin.doctor.read"),
    ("vault", "/console/vault", "Vault", "admin.vault.status"),
    ("account", "/console/account", "Account", "auth.self"),
)
EMERGENCY_WORD = "EMERGENCY"


def _when(ts: float | None) -> str:
    if ts is None:
        return ""
    return datetime.fromtimestamp(float(ts), UTC).strftime("%Y-%m-%d %H:%M UTC")


def _age(ts: float | None, now: float | None = None) -> str:
    if ts is None:
        return ""
    seconds = max(0.0, (now if now is not None else time.time()) - float(ts))
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{int(seconds // size)} {unit}"
    return f"{int(seconds)} s"


_env = jinja2.Environment(
    loader=jinja2.FileSystemLoader(_HERE / "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
_env.filters["when"] = _when
_env.filters["age"] = _age


def render(
    request: Request,
    template: str,
    *,
    status: int = 200,
    headers: Mapping[str, str] | None = None,
    **context: Any,
) -> HTMLResponse:
    actor = context.pop("actor", request.scope.get("garrison.admission"))
    values = {
        "actor": actor,
        "sections": _sections(request, actor),
        "csrf": request.cookies.get(CSRF_COOKIE, ""),
        "notice": None,
        "error": None,
        "section": "",
        **context,
    }
    html = _env.get_template(template).render(**values)
    return HTMLResponse(html, status_code=status, headers={**_PAGE_HEADERS, **(headers or {})})


def _sections(request: Request, actor: Admission | None) -> list[tuple[str, str, str]]:
    """The header's links the policy allows this caller (a decision, not audited: nothing is
    done; the page behind each link is admitted on its own when followed)."""
    if actor is None or actor.principal is None:
        return []
    authorizer = services(request).authorizer
    return [
        (name, href, label)
        for name, href, label, action in SECTIONS
        if authorizer.decide(actor.principal, action, tenant=actor.tenant).allow
    ]


def _back(request: Request) -> str:
    """Where an error page links back to: the section (or the user) the request was about."""
    parts = request.url.path.strip("/").split("/")
    if len(parts) >= 3 and parts[1] == "users" and request.method == "POST":
        return f"/console/users/{parts[2]}"
    if len(parts) >= 2 and parts[1] in {name for name, *_ in SECTIONS}:
        return f"/console/{parts[1]}"
    return LANDING


def failure(request: Request, exc: GarrisonError) -> HTMLResponse:
    headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, RateLimitedError) else None
    return render(
        request,
        "error.html",
        status=exc.status,
        headers=headers,
        error=exc,
        back=_back(request),
        title=exc.title,
    )


def page(handler: Handler) -> Handler:
    """A console route: an unauthenticated caller goes to the sign-in page, a refusal or a bad
    request becomes a page with its reasons (never a stack trace or a JSON body)."""

    @functools.wraps(handler)
    async def run(request: Request) -> Response:
        try:
            return await handler(request)
        except AuthenticationError:
            return RedirectResponse(SIGN_IN, status_code=303, headers=NO_STORE)
        except ForbiddenError as exc:
            if CHANGE_REQUIRED in exc.reasons and request.url.path != CHANGE_PAGE:
                # the policy allows nothing but the change (A15): lead there, not to a dead end
                return RedirectResponse(CHANGE_PAGE, status_code=303, headers=NO_STORE)
            return failure(request, exc)
        except GarrisonError as exc:
            return failure(request, exc)

    return run


def admin(request: Request) -> AdminActions:
    return services(request).admin


# -- forms -----------------------------------------------------------------------------------------
async def form(request: Request) -> dict[str, list[str]]:
    if not is_form(request):
        raise BadRequestError("a console form is application/x-www-form-urlencoded")
    return await form_fields(request)


def one(fields: Mapping[str, list[str]], name: str) -> str:
    values = fields.get(name) or [""]
    return values[0]


def words(text: str) -> list[str]:
    return [w for w in text.replace(",", " ").split() if w]


def validated(model: type[M], data: Mapping[str, Any]) -> M:
    """The form's fields through the API's own body model: the same limits as ``/admin``."""
    try:
        return model.model_validate(dict(data))
    except PydanticValidationError as exc:
        reasons = [
            f"{'.'.join(str(p) for p in err['loc']) or 'form'}: {err['msg']}"
            for err in exc.errors()
        ]
        raise ValidationError("the form does not match the contract", reasons=reasons) from None


# -- sign in and out ---------------------------------------------------------------------------------
async def root(_request: Request) -> Response:
    return RedirectResponse(SIGN_IN, status_code=302)


async def stylesheet(_request: Request) -> Response:
    return Response(
        _STYLESHEET, media_type="text/css", headers={"Cache-Control": "public, max-age=3600"}
    )


def _providers(request: Request) -> list[tuple[str, str]]:
    """The sign-in page's OIDC buttons: each configured provider's name and its login link, which
    asks to continue to the console's landing page (``routes.oidc.return_path`` admits it; the
    callback then sets the same session cookies a password sign-in does)."""
    back = urlencode({"return_to": LANDING})
    return [
        (name, f"/auth/oidc/{quote(name, safe='')}/login?{back}")
        for name in sorted(services(request).oidc.providers)
    ]


async def sign_in_page(request: Request) -> Response:
    return render(
        request,
        "signin.html",
        actor=None,
        title="Sign in",
        username="",
        providers=_providers(request),
    )


@page
async def sign_in(request: Request) -> Response:
    """The console's form login: the same ``sign_in`` as ``POST /auth/login`` with
    ``"session": "cookie"`` (throttles, audit, the ``__Host-`` cookies); a user with a second
    factor gets the code page instead of cookies (A14)."""
    svc = services(request)
    check_origin(request, svc.settings.issuer)  # no login CSRF from another site
    fields = await form(request)
    username, password = one(fields, "username"), one(fields, "password")

    def again(message: str, status: int, headers: Mapping[str, str] | None = None) -> Response:
        return _sign_in_again(request, message, status, headers, username=username)

    if not (0 < len(username) <= 320 and 0 < len(password) <= 1024):
        return again("Enter your username and password.", 422)
    try:
        outcome = await anyio.to_thread.run_sync(
            functools.partial(
                svc.auth.sign_in, username, password, client(request), session="cookie"
            )
        )
    except RateLimitedError as exc:
        wait = {"Retry-After": str(exc.retry_after)}
        return again(f"Too many attempts: try again in {exc.retry_after} s.", 429, wait)
    except AuthenticationError:
        return again("Invalid username or password.", 401)
    if isinstance(outcome, MfaPending):  # no cookies yet: the second step asks for a code
        return _code_page(request, outcome.mfa_token)
    return signed_in(request, outcome)


def _sign_in_again(
    request: Request,
    message: str,
    status: int,
    headers: Mapping[str, str] | None = None,
    *,
    username: str = "",
) -> Response:
    return render(
        request,
        "signin.html",
        actor=None,
        status=status,
        headers=headers,
        title="Sign in",
        username=username[:320],
        message=message,
        providers=_providers(request),
    )


def _code_page(
    request: Request,
    mfa_token: str,
    *,
    message: str | None = None,
    status: int = 200,
    headers: Mapping[str, str] | None = None,
) -> Response:
    return render(
        request,
        "signin_code.html",
        actor=None,
        status=status,
        headers=headers,
        title="Second step",
        mfa_token=mfa_token,
        message=message,
    )


def signed_in(request: Request, outcome: TokenPair) -> Response:
    """The session cookies, and where the browser goes: the change-password page while an
    administrator-set password awaits its change (the token says so), else the landing page."""
    target = CHANGE_PAGE if outcome.claims.get("pwd_change_required") else LANDING
    response = RedirectResponse(target, status_code=303, headers=NO_STORE)
    return with_cookies(response, session_cookies(services(request), outcome))


@page
async def sign_in_code(request: Request) -> Response:
    """The second sign-in step: the ``mfa_token`` of the first and a TOTP or recovery code,
    through the same ``complete_mfa`` as ``POST /auth/mfa/verify`` (its throttle and audit)."""
    svc = services(request)
    check_origin(request, svc.settings.issuer)
    fields = await form(request)
    token = one(fields, "mfa_token")
    code = "".join(one(fields, "code").split())  # "123 456" as an app shows it
    if not 0 < len(token) <= 256:
        return _sign_in_again(request, "Your sign-in expired: sign in again.", 401)
    if not 0 < len(code) <= 64:
        return _code_page(request, token, message="Enter the code.", status=422)
    try:
        pair, _kind = await anyio.to_thread.run_sync(
            svc.auth.complete_mfa, token, code, client(request)
        )
    except RateLimitedError as exc:
        wait = {"Retry-After": str(exc.retry_after)}
        message = f"Too many wrong codes: try again in {exc.retry_after} s."
        return _code_page(request, token, message=message, status=429, headers=wait)
    except AuthenticationError as exc:
        if exc.code == "invalid_mfa_code":  # the pending sign-in stays open for another try
            return _code_page(request, token, message="That code is not valid.", status=401)
        return _sign_in_again(request, "Your sign-in expired: sign in again.", 401)
    return signed_in(request, pair)


@page
async def landing(request: Request) -> Response:
    """Where a signed-in browser starts: the users page when the policy lets the caller list
    users, else its own account page."""
    actor = await admit(request, "auth.self")
    assert actor.principal is not None
    may = services(request).authorizer.decide(
        actor.principal, "admin.users.list", tenant=actor.tenant
    )
    return RedirectResponse(HOME if may.allow else ACCOUNT, status_code=303, headers=NO_STORE)


@page
async def sign_out(request: Request) -> Response:
    actor = await admit(request, "auth.self")
    who = actor.principal
    assert who is not None  # auth.self needs authentication
    svc = services(request)
    refresh = request.cookies.get(REFRESH_COOKIE)
    await anyio.to_thread.run_sync(
        svc.auth.logout, who.session_id, refresh, who.sub, client(request)
    )
    response = RedirectResponse(SIGN_IN, status_code=303, headers=NO_STORE)
    return with_cookies(response, SessionCookies.clear())


# -- users -------------------------------------------------------------------------------------------
async def _users(
    request: Request, actor: Admission, *, status: int = 200, notice: str | None = None
) -> Response:
    found = await admin(request).list_users(actor)
    query = request.query_params.get("q", "").strip()[:150]
    needle = query.lower()
    shown = [u for u in found if needle in u.username.lower() or needle in (u.email or "").lower()]
    return render(
        request,
        "users.html",
        actor=actor,
        status=status,
        notice=notice,
        section="users",
        title="Users",
        users=shown,
        total=len(found),
        q=query,
        roles=sorted(admin(request).known_roles()),
    )


@page
async def users_page(request: Request) -> Response:
    return await _users(request, await admit(request, "admin.users.list"))


@page
async def create_user(request: Request) -> Response:
    actor = await admit(request, "admin.users.create")
    fields = await form(request)
    body = validated(
        CreateUser,
        {
            "username": one(fields, "username"),
            "password": one(fields, "password"),
            "email": one(fields, "email") or None,
            "roles": [r for v in fields.get("roles", []) for r in words(v)] or ["user"],
            "tenant": one(fields, "tenant").strip() or None,
        },
    )
    user = await admin(request).create_user(
        actor,
        username=body.username,
        password=body.password,
        email=body.email,
        roles=tuple(body.roles),
        tenant=body.tenant,
    )
    return await _users(request, actor, status=201, notice=f"User {user.username} created.")


async def _user(
    request: Request,
    actor: Admission,
    ref: str,
    *,
    status: int = 200,
    notice: str | None = None,
    secret: str | None = None,
) -> Response:
    owner, keys = await admin(request).list_api_keys(actor, ref)
    return render(
        request,
        "user.html",
        actor=actor,
        status=status,
        notice=notice,
        section="users",
        title=owner.username,
        user=owner,
        keys=keys,
        secret=secret,
        roles=sorted(admin(request).known_roles() | set(owner.roles)),
        now=time.time(),
    )


@page
async def user_page(request: Request) -> Response:
    actor = await admit(request, "admin.users.list")
    return await _user(request, actor, request.path_params["user_id"])


@page
async def set_roles(request: Request) -> Response:
    actor = await admit(request, "admin.users.update")
    fields = await form(request)
    roles = [r for v in fields.get("roles", []) for r in words(v)]
    body = validated(PatchUser, {"roles": roles})
    assert body.roles is not None
    user = await admin(request).update_user(
        actor, request.path_params["user_id"], roles=tuple(body.roles)
    )
    return await _user(request, actor, user.id, notice=f"Roles of {user.username} set.")


@page
async def set_active(request: Request) -> Response:
    actor = await admit(request, "admin.users.update")
    fields = await form(request)
    value = one(fields, "active")
    if value not in ("true", "false"):
        raise ValidationError("enable or disable?", reasons=["active: true or false"])
    user = await admin(request).update_user(
        actor, request.path_params["user_id"], active=value == "true"
    )
    word = "enabled" if user.active else "disabled (everything it held is revoked)"
    return await _user(request, actor, user.id, notice=f"{user.username} {word}.")


@page
async def revoke_sessions(request: Request) -> Response:
    actor = await admit(request, "admin.users.revoke_sessions")
    await form(request)
    user, revoked = await admin(request).revoke_sessions(actor, request.path_params["user_id"])
    notice = (
        f"Revoked {revoked.sessions} session(s) and {revoked.api_keys} API key(s) "
        f"of {user.username}."
    )
    return await _user(request, actor, user.id, notice=notice)


# -- API keys ----------------------------------------------------------------------------------------
@page
async def create_api_key(request: Request) -> Response:
    actor = await admit(request, "admin.api_keys.create")
    fields = await form(request)
    body = validated(
        CreateApiKey,
        {
            "user": request.path_params["user_id"],
            "scopes": words(one(fields, "scopes")),
            "name": one(fields, "name"),
            "expires_in": one(fields, "expires_in").strip() or None,
        },
    )
    secret, key = await admin(request).create_api_key(
        actor, body.user, scopes=tuple(body.scopes), name=body.name, expires_in=body.expires_in
    )
    notice = f"API key {key.id} created: copy it now, it is not shown again."
    return await _user(request, actor, key.user_id, status=201, notice=notice, secret=secret)


@page
async def revoke_api_key(request: Request) -> Response:
    actor = await admit(request, "admin.api_keys.revoke")
    await form(request)
    key = await admin(request).revoke_api_key(actor, request.path_params["key_id"])
    return await _user(request, actor, key.user_id, notice=f"API key {key.id} revoked.")


# -- signing keys ------------------------------------------------------------------------------------
async def _keys(request: Request, actor: Admission, *, notice: str | None = None) -> Response:
    keys = await admin(request).list_keys(actor)
    return render(
        request,
        "keys.html",
        actor=actor,
        notice=notice,
        section="keys",
        title="Signing keys",
        keys=keys,
        now=time.time(),
    )


@page
async def keys_page(request: Request) -> Response:
    return await _keys(request, await admit(request, "admin.keys.list"))


@page
async def emergency_page(request: Request) -> Response:
    await admit(request, "admin.keys.rotate")
    return render(
        request, "emergency.html", section="keys", title="Emergency rotation", word=EMERGENCY_WORD
    )


@page
async def rotate_keys(request: Request) -> Response:
    actor = await admit(request, "admin.keys.rotate")
    fields = await form(request)
    emergency = one(fields, "emergency") == "true"
    if emergency and one(fields, "confirm").strip() != EMERGENCY_WORD:
        exc = ValidationError(
            "the emergency rotation was not confirmed",
            reasons=[f"confirm: type {EMERGENCY_WORD} to revoke every older key at once"],
        )
        return render(
            request,
            "emergency.html",
            status=422,
            error=exc,
            section="keys",
            title="Emergency rotation",
            word=EMERGENCY_WORD,
        )
    rotation = await admin(request).rotate_keys(actor, emergency=emergency)
    if emergency:
        notice = (
            f"Emergency rotation done: {rotation.kid} signs from now on and every older key is "
            "revoked, so every session (this one too) must sign in again."
        )
    else:
        notice = (
            f"Rotated: {rotation.kid} signs from now on; older tokens verify until they expire."
        )
    return await _keys(request, actor, notice=notice)


# -- audit -------------------------------------------------------------------------------------------
_PRESETS = {"admin-actions": "Admin actions", "failed-logins": "Failed logins (24 h)"}


def _audit_filter(request: Request, bound: str | None) -> AuditFilter:
    params = request.query_params
    now = services(request).clock()
    text = {n: (params.get(n) or "").strip() for n in ("action", "actor", "outcome", "tenant")}
    limit = params.get("limit", "100")
    if not limit.isdigit():
        raise ValidationError("bad limit", reasons=["limit: a whole number"])
    name = params.get("preset") or ""
    base = preset(name, now, actor=text["actor"] or None) if name else AuditFilter()
    since = params.get("since") or ""
    return replace(
        base,
        action=text["action"] or base.action,
        actor=text["actor"] or base.actor,
        outcome=text["outcome"] or base.outcome,
        tenant=bound or text["tenant"] or None,  # a tenant's admission sees that tenant only
        since=parse_time(since, now, name="since") if since else base.since,
        limit=int(limit),
    )


@page
async def audit_page(request: Request) -> Response:
    actor = await admit(request, "audit.read")
    query = _audit_filter(request, actor.tenant)
    records = await anyio.to_thread.run_sync(search, services(request).db, query)
    return render(
        request,
        "audit.html",
        actor=actor,
        section="audit",
        title="Audit log",
        records=records,
        query=query,
        form={n: request.query_params.get(n, "") for n in ("action", "actor", "since", "tenant")},
        outcomes=OUTCOMES,
        presets=_PRESETS,
        chosen=request.query_params.get("preset", ""),
    )


@page
async def audit_verify(request: Request) -> Response:
    actor = await admit(request, "audit.verify")  # platform-only: the chain is platform-wide
    svc = services(request)
    db = svc.db
    report = await anyio.to_thread.run_sync(
        lambda: verify_chain(db, stored_public_keys(db), svc.audit_seal)
    )
    return render(
        request, "verify.html", actor=actor, section="audit", title="Audit chain", report=report
    )


def routes() -> list[BaseRoute]:
    return [
        Route("/", root, methods=["GET"]),
        Route("/console", sign_in_page, methods=["GET"]),
        Route("/console/static/console.css", stylesheet, methods=["GET"]),
        Route("/console/login", sign_in, methods=["POST"]),
        Route("/console/login/code", sign_in_code, methods=["POST"]),
        Route("/console/logout", sign_out, methods=["POST"]),
        Route("/console/home", landing, methods=["GET"]),
        Route("/console/users", users_page, methods=["GET"]),
        Route("/console/users", create_user, methods=["POST"]),
        Route("/console/users/{user_id}", user_page, methods=["GET"]),
        Route("/console/users/{user_id}/roles", set_roles, methods=["POST"]),
        Route("/console/users/{user_id}/active", set_active, methods=["POST"]),
        Route("/console/users/{user_id}/revoke-sessions", revoke_sessions, methods=["POST"]),
        Route("/console/users/{user_id}/api-keys", create_api_key, methods=["POST"]),
        Route("/console/api-keys/{key_id}/revoke", revoke_api_key, methods=["POST"]),
        Route("/console/keys", keys_page, methods=["GET"]),
        Route("/console/keys/emergency", emergency_page, methods=["GET"]),
        Route("/console/keys/rotate", rotate_keys, methods=["POST"]),
        Route("/console/audit", audit_page, methods=["GET"]),
        Route("/console/audit/verify", audit_verify, methods=["GET"]),
    ]
