"""Browser sessions over HTTP (A9): the session cookie as a credential, CSRF on state changes.

A cookie-authenticated request to any path is admitted by ``garrison.admission`` (the same rules at
``/verify`` and through the proxy); this module serves login, refresh and logout. The rules:

- the cookie is read only when the request has no ``Authorization`` header (a Bearer client never
  needs a CSRF token, and a cookie never overrides an explicit credential);
- it must hold a Garrison session token (a JWT with a ``sid``): an API key or an external IdP's
  token planted in the cookie is refused;
- on ``POST``/``PUT``/``PATCH``/``DELETE`` the request must come from our own origin when the
  browser says where it comes from (``Sec-Fetch-Site``, ``Origin``), and must carry
  ``X-CSRF-Token`` equal to the CSRF cookie and minted for this session. A refusal is a 403,
  audited as ``auth.csrf``.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from garrison.app import Services
from garrison.errors import AuthenticationError, ForbiddenError
from garrison.identity.cookies import (
    CSRF_COOKIE,
    CSRF_HEADER,
    REFRESH_COOKIE,
    SESSION_COOKIE,
    SessionCookies,
    check_own_site,
)
from garrison.identity.service import Client, TokenPair


def own_origins(request: Request, issuer: str) -> tuple[str, ...]:
    """This service's origins: the one the request was addressed to, and the configured issuer."""
    host = request.headers.get("host", "")
    parts = urlsplit(issuer)
    return (f"{request.url.scheme}://{host}", f"{parts.scheme}://{parts.netloc}")


def check_origin(request: Request, issuer: str) -> None:
    """Refuse a cross-site browser request (``Sec-Fetch-Site``/``Origin``), whichever of our own
    origins it names."""
    check_own_site(request.headers, own_origins(request, issuer))


async def _audit_refusal(
    svc: Services, actor: str | None, tenant: str | None, client: Client, exc: ForbiddenError
) -> None:
    await svc.audit.record(
        client.event(
            "auth.csrf",
            "deny",
            actor=actor,
            tenant=tenant,
            reason=exc.reasons[0] if exc.reasons else exc.detail,
        )
    )


def session_cookies(svc: Services, pair: TokenPair) -> list[str]:
    """``Set-Cookie`` values that start (or renew) the browser session behind ``pair``."""
    settings = svc.settings
    cookies: SessionCookies = svc.cookies
    return cookies.issue(
        pair.access_token,
        pair.expires_in,
        pair.refresh_token,
        min(settings.refresh_ttl, settings.session_absolute_ttl),  # the server ends it then (A16)
        str(pair.claims["sid"]),
    )


def with_cookies(response: Response, cookies: list[str]) -> Response:
    for cookie in cookies:
        response.headers.append("set-cookie", cookie)
    return response


def by_cookie(request: Request) -> bool:
    """Was (or would) this request be authenticated by the session cookie?"""
    return "authorization" not in request.headers and SESSION_COOKIE in request.cookies


def has_session_cookies(request: Request) -> bool:
    return any(name in request.cookies for name in (SESSION_COOKIE, REFRESH_COOKIE, CSRF_COOKIE))


async def cookie_refresh_token(request: Request, svc: Services, client: Client) -> str:
    """The refresh cookie of a CSRF-checked browser refresh (``POST /auth/refresh``, no body)."""
    token = request.cookies.get(REFRESH_COOKIE)
    if not token:
        raise AuthenticationError("no refresh token", code="invalid_refresh_token")
    sid = await anyio.to_thread.run_sync(svc.sessions.family_of, token)
    try:
        check_origin(request, svc.settings.issuer)
        svc.cookies.check_csrf(
            sid, request.headers.get(CSRF_HEADER), request.cookies.get(CSRF_COOKIE)
        )
    except ForbiddenError as exc:
        await _audit_refusal(svc, None, None, client, exc)
        raise
    return token


def cookie_session_response(svc: Services, pair: TokenPair) -> JSONResponse:
    """The answer to a cookie login or refresh: the cookies, and no token in the body (an
    ``HttpOnly`` cookie is worth nothing if the same token is handed to the page's script)."""
    body = {"session": "cookie", "token_type": "cookie", "expires_in": pair.expires_in}
    response = JSONResponse(body, headers={"Cache-Control": "no-store", "Pragma": "no-cache"})
    with_cookies(response, session_cookies(svc, pair))
    return response
