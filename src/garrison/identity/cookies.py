"""Browser sessions (A9): ``__Host-`` cookies and a CSRF token bound to the session.

What the cookies hold:

- ``__Host-garrison_session``: a Garrison access token (the same JWT a Bearer client gets), so a
  cookie request is verified on exactly the path a Bearer one is: signature from the cached key,
  user status and session revocation from the invalidated caches (A3, A4). ``HttpOnly``; lives as
  long as the token.
- ``__Host-garrison_refresh``: the session's refresh token, ``HttpOnly; SameSite=Strict``; it is
  spent by ``POST /auth/refresh`` with an empty body (rotation and reuse detection as in A5).
- ``__Host-garrison_csrf``: the CSRF token, readable by the page's script (not ``HttpOnly``), which
  echoes it in ``X-CSRF-Token`` on every state-changing request (double submit). The token is
  ``<random>.<HMAC(GARRISON_SESSION_SECRET, sid, random)>``: bound to the session (``sid``, the
  refresh family), so a token planted by a sibling subdomain or left from another session fails.

Every cookie is ``Secure; Path=/`` with no ``Domain`` (the ``__Host-`` prefix makes browsers
enforce that: no subdomain can set or shadow them) and ``SameSite`` (``Lax`` by default, so the
OIDC redirect back from the provider lands logged in; ``GARRISON_SESSION_SAMESITE=strict`` for
more). ``Secure`` is set in development too: browsers treat ``http://localhost`` and
``http://127.0.0.1`` as secure contexts and keep such cookies there; any other plain-HTTP origin
must use Bearer tokens.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from garrison.errors import ForbiddenError

SESSION_COOKIE = "__Host-garrison_session"
REFRESH_COOKIE = "__Host-garrison_refresh"
CSRF_COOKIE = "__Host-garrison_csrf"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
CSRF_FAILED = "csrf token missing or invalid"
CROSS_SITE = "cross-site request refused"
_MAX_TOKEN = 200

SameSite = Literal["lax", "strict"]


def set_cookie(
    name: str, value: str, *, max_age: int, same_site: str, http_only: bool = True
) -> str:
    """A ``Set-Cookie`` value with the ``__Host-`` attributes (Secure, Path=/, no Domain)."""
    parts = [f"{name}={value}", "Path=/", f"Max-Age={max_age}", "Secure"]
    if http_only:
        parts.append("HttpOnly")
    parts.append(f"SameSite={same_site.capitalize()}")
    return "; ".join(parts)


def clear_cookie(name: str) -> str:
    return f"{name}=; Path=/; Max-Age=0; Secure; HttpOnly; SameSite=Lax"


@dataclass(frozen=True, slots=True)
class SessionCookies:
    key: bytes  # derived from GARRISON_SESSION_SECRET for this purpose only
    same_site: SameSite = "lax"

    def issue(
        self, access_token: str, access_ttl: int, refresh_token: str, refresh_ttl: int, sid: str
    ) -> list[str]:
        """``Set-Cookie`` values that start (or renew) the browser session of ``sid``."""
        return [
            set_cookie(SESSION_COOKIE, access_token, max_age=access_ttl, same_site=self.same_site),
            set_cookie(REFRESH_COOKIE, refresh_token, max_age=refresh_ttl, same_site="strict"),
            set_cookie(
                CSRF_COOKIE,
                self.csrf_token(sid),
                max_age=refresh_ttl,
                same_site=self.same_site,
                http_only=False,
            ),
        ]

    @staticmethod
    def clear() -> list[str]:
        return [clear_cookie(name) for name in (SESSION_COOKIE, REFRESH_COOKIE, CSRF_COOKIE)]

    def csrf_token(self, sid: str, nonce: str | None = None) -> str:
        nonce = nonce or secrets.token_urlsafe(18)
        return f"{nonce}.{self._mac(sid, nonce)}"

    def check_csrf(self, sid: str | None, header: str | None, cookie: str | None) -> None:
        """The header must equal the cookie (double submit) and be minted for ``sid``."""
        if not (sid and header and cookie) or len(header) > _MAX_TOKEN:
            raise ForbiddenError(CSRF_FAILED, reasons=[CSRF_FAILED], code="csrf")
        nonce, _, mac = header.partition(".")
        same = hmac.compare_digest(header.encode(), cookie.encode())
        bound = hmac.compare_digest(mac.encode(), self._mac(sid, nonce).encode())
        if not (same and bound and nonce):
            raise ForbiddenError(CSRF_FAILED, reasons=[CSRF_FAILED], code="csrf")

    def _mac(self, sid: str, nonce: str) -> str:
        message = f"csrf|{len(sid)}|{sid}|{len(nonce)}|{nonce}".encode()
        return hmac.new(self.key, message, hashlib.sha256).hexdigest()


def check_same_origin(headers: Mapping[str, str], own_origin: str) -> None:
    """Defence in depth for cookie-authenticated state changes: a browser says where a request
    comes from (``Sec-Fetch-Site``, ``Origin``); anything but our own origin is refused. A client
    that sends neither (not a browser) still needs the CSRF token."""
    site = headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        raise ForbiddenError(CROSS_SITE, reasons=[CROSS_SITE], code="csrf")
    origin = headers.get("origin")
    if origin is not None and origin.rstrip("/").lower() != own_origin.lower():
        raise ForbiddenError(CROSS_SITE, reasons=[CROSS_SITE], code="csrf")


def check_own_site(headers: Mapping[str, str], own_origins: tuple[str, ...]) -> None:
    """``check_same_origin`` against each of this service's own origins: refused only when the
    request comes from none of them."""
    problem: ForbiddenError | None = None
    for origin in own_origins or ("",):
        try:
            check_same_origin(headers, origin)
        except ForbiddenError as exc:
            problem = exc
        else:
            return
    assert problem is not None
    raise problem


def cookie_value(cookie_header: str | None, name: str) -> str | None:
    """One cookie's value from a raw ``Cookie`` header, for framework-free callers (``/verify``,
    the proxy gate) that want to accept the session cookie too."""
    for part in (cookie_header or "").split(";"):
        key, eq, value = part.strip().partition("=")
        if eq and key == name:
            return value or None
    return None
