"""Request helpers shared by the routers: body parsing, admission of the caller, client facts."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, TypeVar
from urllib.parse import parse_qs

from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError
from starlette.requests import Request

from garrison.admission import Admission, Attempt, BrowserFacts
from garrison.app import Services
from garrison.errors import BadRequestError, ValidationError
from garrison.gateway.gate import origin_of
from garrison.identity.cookies import CSRF_COOKIE, CSRF_HEADER, SAFE_METHODS, SESSION_COOKIE
from garrison.identity.service import Client
from garrison.policy import Resource

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
    except RecursionError:  # nesting deeper than the parser's stack: refused, never a 500 (E7)
        raise BadRequestError("body is nested too deeply") from None
    try:
        # strict: JSON types as sent; ``0`` or ``"false"`` is not a boolean, ``"1"`` not a number
        return model.model_validate(data, strict=True)
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


#: A console page posts plain HTML forms; the CSRF token travels as this hidden field.
FORM_TYPE = "application/x-www-form-urlencoded"
CSRF_FIELD = "csrf_token"
CONSOLE_PREFIX = "/console/"
_MAX_FIELDS = 64


def is_form(request: Request) -> bool:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    return ctype == FORM_TYPE


async def form_fields(request: Request) -> dict[str, list[str]]:
    """The fields of an ``application/x-www-form-urlencoded`` body (empty for any other type);
    the body is read once and cached by Starlette, so the pipeline and the page share it."""
    if not is_form(request):
        return {}
    raw = await request.body()
    try:
        text = raw.decode("utf-8")
        return parse_qs(text, keep_blank_values=True, max_num_fields=_MAX_FIELDS)
    except (UnicodeDecodeError, ValueError):
        raise BadRequestError("the form is not valid UTF-8 form data") from None


async def console_form_csrf(request: Request) -> str | None:
    """The ``csrf_token`` field of a console form post, read only for an
    ``application/x-www-form-urlencoded`` state change under ``/console/``: everywhere else (the
    JSON API, the proxy) the header is the only evidence. The pipeline still decides (A9)."""
    if request.method in SAFE_METHODS or not request.url.path.startswith(CONSOLE_PREFIX):
        return None
    values = (await form_fields(request)).get(CSRF_FIELD)
    return values[0] if values is not None and len(values) == 1 else None


def attempt(request: Request, *, csrf_form: str | None = None) -> Attempt:
    """The facts of a request to one of Garrison's own endpoints, for the admission pipeline.
    ``csrf_form``: the console form's CSRF field (``console_form_csrf``)."""
    authorization = request.headers.get("authorization")
    session = browser = None
    if authorization is None:
        value = request.cookies.get(SESSION_COOKIE)
        if value:
            host = request.headers.get("host", "")
            issuer = services(request).settings.issuer
            session = value
            browser = BrowserFacts(
                csrf_header=request.headers.get(CSRF_HEADER),
                csrf_cookie=request.cookies.get(CSRF_COOKIE),
                origin=request.headers.get("origin"),
                sec_fetch_site=request.headers.get("sec-fetch-site"),
                own_origins=(f"{request.url.scheme}://{host}", origin_of(issuer)),
                csrf_form=csrf_form,
            )
    return Attempt(
        method=request.method,
        path=request.url.path,
        authorization=authorization,
        tenant_header=request.headers.get("x-tenant-id"),
        ip=client_ip(request),
        request_id=request.scope.get("garrison.request_id"),
        user_agent=request.headers.get("user-agent"),
        session=session,
        browser=browser,
    )


#: Paths that never need X-Tenant-ID (T2): login (and its second step), refresh, logout, the
#: caller's own second factor (A14), health and discovery.
TENANT_EXEMPT_PATHS = frozenset(
    {
        "/auth/login",
        "/auth/refresh",
        "/auth/logout",
        "/auth/mfa/verify",
        "/auth/mfa/totp",
        "/auth/mfa/totp/confirm",
        "/healthz",
        "/readyz",
    }
)


async def admit(
    request: Request,
    action: str,
    *,
    resource: Resource | None = None,
    params: Mapping[str, Any] | None = None,
) -> Admission:
    """Admit a request to one of Garrison's own endpoints as the registered ``action``: the same
    pipeline, policy and refusal records as ``/verify`` and the proxy (Z2, Z3)."""
    csrf_form = await console_form_csrf(request)
    admission = await services(request).admission.admit(
        attempt(request, csrf_form=csrf_form),
        action=action,
        resource=resource,
        params=params,
        tenant_optional=request.url.path in TENANT_EXEMPT_PATHS,
    )
    request.scope["garrison.admission"] = admission
    return admission


async def authorize(
    request: Request,
    admission: Admission,
    action: str,
    *,
    resource: Resource | None = None,
    params: Mapping[str, Any] | None = None,
    tenant: str | None = None,
) -> None:
    """A further decision about an admitted caller (the record it acts on), audited the same way."""
    await services(request).admission.authorize(
        admission, action, resource=resource, params=params, tenant=tenant
    )
