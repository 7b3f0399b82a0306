"""A hand-driven browser for the cookie and OIDC suites (A9, A11).

Cookies are parsed from ``Set-Cookie`` and sent back by hand: a cookie jar would hide exactly what
these tests assert (the flags), and would refuse ``Secure`` cookies over the in-process
``http://`` test transport anyway.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

import httpx2
import sqlalchemy as sa
from starlette.testclient import TestClient

from garrison.app import Services
from garrison.storage.schema import audit_log

SESSION = "__Host-garrison_session"
REFRESH = "__Host-garrison_refresh"
CSRF = "__Host-garrison_csrf"
BINDING = "__Host-garrison_oidc"


class Answer(Protocol):
    """An HTTP response of either client (httpx for live servers, the in-process test client)."""

    @property
    def headers(self) -> Any: ...


@dataclass(frozen=True)
class SetCookie:
    name: str
    value: str
    attrs: Mapping[str, str]
    flags: frozenset[str]


def set_cookies(response: Answer) -> dict[str, SetCookie]:
    found: dict[str, SetCookie] = {}
    for raw in response.headers.get_list("set-cookie"):
        parts = [p.strip() for p in raw.split(";")]
        name, _, value = parts[0].partition("=")
        attrs: dict[str, str] = {}
        flags: set[str] = set()
        for part in parts[1:]:
            key, eq, val = part.partition("=")
            if eq:
                attrs[key.lower()] = val
            else:
                flags.add(key.lower())
        found[name] = SetCookie(name, value, attrs, frozenset(flags))
    # SimpleCookie must accept them too (a well-formed header, as a browser parses it)
    for raw in response.headers.get_list("set-cookie"):
        SimpleCookie().load(raw)
    return found


def cookie_header(cookies: Mapping[str, str]) -> dict[str, str]:
    return {"cookie": "; ".join(f"{k}={v}" for k, v in cookies.items())}


@dataclass
class Browser:
    """Keeps the cookies Garrison set, as a browser on its origin would."""

    client: TestClient
    jar: dict[str, str] = field(default_factory=dict)

    def absorb(self, response: Answer) -> None:
        for name, cookie in set_cookies(response).items():
            if cookie.attrs.get("max-age") == "0":
                self.jar.pop(name, None)
            else:
                self.jar[name] = cookie.value

    def request(self, method: str, url: str, **kwargs: Any) -> httpx2.Response:
        headers = {**cookie_header(self.jar), **kwargs.pop("headers", {})}
        response = self.client.request(
            method, url, headers=headers, follow_redirects=False, **kwargs
        )
        self.absorb(response)
        return response

    def csrf_headers(self) -> dict[str, str]:
        return {"X-CSRF-Token": self.jar[CSRF]}


def path_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}" if parts.query else parts.path


def query_of(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def audit_rows(services: Services, action: str) -> list[Any]:
    with services.db.begin() as conn:
        return list(
            conn.execute(
                sa.select(audit_log.c.outcome, audit_log.c.reason, audit_log.c.details)
                .where(audit_log.c.action == action)
                .order_by(audit_log.c.seq)
            ).all()
        )
