"""What the pipeline is told about a request, and what it answers when it admits one."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from garrison.principal import Principal

#: How the caller proved who it is: the one spelling every deny event and metric uses.
CredentialKind = Literal["jwt", "session", "api_key", "external", "cli", "none"]


@dataclass(frozen=True, slots=True)
class BrowserFacts:
    """The CSRF evidence of a request that may be authenticated by the session cookie (A9)."""

    csrf_header: str | None  # X-CSRF-Token
    csrf_cookie: str | None  # the CSRF cookie's value
    origin: str | None  # Origin
    sec_fetch_site: str | None  # Sec-Fetch-Site
    own_origins: tuple[str, ...]  # the origins that count as this site's own
    #: the ``csrf_token`` field of a console form post (``application/x-www-form-urlencoded`` to
    #: ``/console/*`` only): the same evidence as the header, for a page without JavaScript
    csrf_form: str | None = None


@dataclass(frozen=True, slots=True)
class Attempt:
    """The facts of one request, whoever forwarded it (the original request, behind a proxy)."""

    method: str
    path: str  # canonical
    authorization: str | None
    tenant_header: str | None
    ip: str | None
    request_id: str | None = None
    user_agent: str | None = None
    session: str | None = None  # the session cookie's value; used only without Authorization
    browser: BrowserFacts | None = None


@dataclass(frozen=True, slots=True)
class Admission:
    principal: Principal | None  # None: an anonymous caller of a public action
    tenant: str | None  # the tenant the request acts in (None: platform scope)
    action: str
    credential: CredentialKind
    #: the roles the credential carries, as decided (an admin's API key under
    #: REQUIRE_JWT_FOR_ADMIN carries no admin): what X-Auth-Roles tells an upstream
    roles: frozenset[str] = frozenset()
    attempt: Attempt | None = None  # the request admitted (its client facts go to the audit)

    @property
    def actor(self) -> str | None:
        return self.principal.sub if self.principal is not None else None
