"""What ``/verify`` and the proxy add around the admission pipeline: raw headers in and out.

The checks are ``garrison.admission.Pipeline``'s. Here: the session cookie and CSRF evidence read
from raw ASGI headers (so a browser session authenticates at ``/verify`` and through the proxy
exactly as at Garrison's own API, A9), and the identity headers an upstream is told, built once
per (identity, roles, tenant).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from garrison.admission import Admission, BrowserFacts
from garrison.gateway.raw import RawHeaders, header_value
from garrison.identity.cookies import CSRF_COOKIE, SESSION_COOKIE, cookie_value

#: Headers Garrison sets for the upstream; a client-supplied one is always removed first.
IDENTITY_HEADERS = (b"x-auth-user", b"x-auth-subject", b"x-auth-tenant", b"x-auth-roles")
_HEADER_CACHE_SIZE = 50_000


def identity_headers(admission: Admission) -> RawHeaders:
    principal = admission.principal
    if principal is None:
        return []
    return [
        (b"x-auth-user", header_value(principal.username)),
        (b"x-auth-subject", header_value(principal.sub)),
        (b"x-auth-tenant", header_value(admission.tenant or "")),
        (b"x-auth-roles", header_value(",".join(sorted(admission.roles)))),
    ]


class IdentityHeaders:
    """The identity headers of an admission, built once per (identity, roles, tenant)."""

    def __init__(self) -> None:
        self._cache: dict[tuple[object, ...], RawHeaders] = {}

    def __call__(self, admission: Admission) -> RawHeaders:
        principal = admission.principal
        if principal is None:
            return []
        key = (principal.sub, principal.username, admission.roles, admission.tenant)
        found = self._cache.get(key)
        if found is None:
            if len(self._cache) >= _HEADER_CACHE_SIZE:
                self._cache.clear()
            found = self._cache[key] = identity_headers(admission)
        return found


def browser_session(
    cookie: bytes | None,
    csrf_header: bytes | None,
    origin: bytes | None,
    sec_fetch_site: bytes | None,
    own_origins: tuple[str, ...],
) -> tuple[str | None, BrowserFacts | None]:
    """The session cookie's value and the request's CSRF evidence, from raw header values."""
    if cookie is None:
        return None, None
    text = cookie.decode("latin-1")
    session = cookie_value(text, SESSION_COOKIE)
    if session is None:
        return None, None
    facts = BrowserFacts(
        csrf_header=_text(csrf_header),
        csrf_cookie=cookie_value(text, CSRF_COOKIE),
        origin=_text(origin),
        sec_fetch_site=_text(sec_fetch_site),
        own_origins=own_origins,
    )
    return session, facts


def origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _text(value: bytes | None) -> str | None:
    return value.decode("latin-1") if value is not None else None
