"""``/auth/oidc/{provider}/login`` and ``/callback`` (A11): browser login through an OIDC provider.

``login`` answers 302 to the provider's authorization endpoint and sets the browser-binding cookie
``__Host-garrison_oidc`` (``HttpOnly; Secure; SameSite=Lax``: it must come back with the top-level
redirect from the provider). ``callback`` completes the login and answers 303 to the provider's
``post_login_url`` with the session cookies (``identity.cookies``); tokens never appear in a URL or
a body here.

``login?return_to=/console/...`` is how the console's sign-in page starts a login (U1): the
callback then answers 303 to that path instead of ``post_login_url``. It is checked here, before
any login starts, and refused (400) unless it is a canonical path of the console itself
(``return_path``): never another origin (``//host``, ``https://host``, ``/\\host``), never another
path of this one, no query, no fragment. The accepted value is kept with the server-side login
state (``identity.oidc.LoginRequest``) and read back from there only: the callback's query cannot
choose where the browser goes.

A failure is a problem+json (401 for a refused login, 429 when throttled, 503 when the provider
cannot be reached), and the binding cookie is cleared either way.
"""

from __future__ import annotations

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from garrison.errors import BadRequestError, GarrisonError
from garrison.gateway.problem import problem_response
from garrison.gateway.requests import client, services
from garrison.gateway.session_cookies import session_cookies, with_cookies
from garrison.identity.cookies import clear_cookie, set_cookie
from garrison.paths import canonical_path

BINDING_COOKIE = "__Host-garrison_oidc"
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
#: The only paths a login may continue to (``return_to``): the console's own
CONSOLE = "/console"
_MAX_RETURN = 512


def return_path(value: str) -> str:
    """``value`` if it is a console path a browser can only read as one on this origin, else
    ``BadRequestError``. Canonical (``garrison.paths``) means no ``//``, ``\\``, ``..``, escapes
    of separators, controls, spaces, ``?`` or ``#``; the prefix must end at a ``/`` so
    ``/console@host`` or ``/console.host`` are not the console either."""
    inside = value == CONSOLE or value.startswith(CONSOLE + "/")
    if not (0 < len(value) <= _MAX_RETURN and inside and canonical_path(value) == value):
        raise BadRequestError(
            "return_to must be a path of the console",
            reasons=[f"return_to: a canonical path under {CONSOLE}/, at most {_MAX_RETURN} chars"],
        )
    return value


async def login(request: Request) -> Response:
    svc = services(request)
    asked = request.query_params.getlist("return_to")
    if len(asked) > 1:
        raise BadRequestError("return_to is repeated")
    return_to = return_path(asked[0]) if asked else None
    started = await anyio.to_thread.run_sync(
        svc.oidc.begin, request.path_params["provider"], client(request), return_to
    )
    response = RedirectResponse(started.url, status_code=302, headers=_NO_STORE)
    binding = set_cookie(
        BINDING_COOKIE, started.binding, max_age=svc.settings.oidc_state_ttl, same_site="lax"
    )
    return with_cookies(response, [binding])


async def callback(request: Request) -> Response:
    svc = services(request)
    try:
        params = _single_params(request)
        done = await anyio.to_thread.run_sync(
            svc.oidc.complete,
            request.path_params["provider"],
            params,
            request.cookies.get(BINDING_COOKIE),
            client(request),
        )
    except GarrisonError as exc:
        return with_cookies(problem_response(exc), [clear_cookie(BINDING_COOKIE)])
    response = RedirectResponse(done.post_login_url, status_code=303, headers=_NO_STORE)
    return with_cookies(response, [clear_cookie(BINDING_COOKIE), *session_cookies(svc, done.pair)])


def _single_params(request: Request) -> dict[str, str]:
    """The callback's query; a parameter given twice is refused (which one would we trust?)."""
    items = request.query_params.multi_items()
    params = dict(items)
    if len(params) != len(items):
        raise BadRequestError("a callback parameter is repeated")
    return params


def routes() -> list[BaseRoute]:
    return [
        Route("/auth/oidc/{provider}/login", login, methods=["GET"]),
        Route("/auth/oidc/{provider}/callback", callback, methods=["GET"]),
    ]
