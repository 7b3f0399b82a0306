"""The value types of authorization: what is acted on, and what was decided (with why)."""

from __future__ import annotations

from dataclasses import dataclass

from garrison.config.defs import RouteDef


@dataclass(frozen=True, slots=True)
class Resource:
    """The thing acted on. ``tenant`` None means untagged: no tenancy constraint applies."""

    type: str | None = None
    id: str | None = None
    tenant: str | None = None
    owner: str | None = None
    #: a platform-scope record (no tenant, such as a platform user): unreachable from a tenant
    platform: bool = False


@dataclass(frozen=True, slots=True)
class Decision:
    """An answer and its reasons; a deny always carries at least one reason."""

    allow: bool
    reasons: tuple[str, ...]
    policy_version: str
    action: str | None = None


@dataclass(frozen=True, slots=True)
class RouteMatch:
    """The registered action a request path maps to, and the route that mapped it."""

    action: str
    route: RouteDef


@dataclass(frozen=True, slots=True)
class RequestFacts:
    """What the admission pipeline knows of the request beyond subject, action and resource."""

    tenant_header_missing: bool = False  # REQUIRE_TENANT_HEADER, tenant-bound caller, none sent
    route: RouteDef | None = None  # the registry route the path matched (its required_roles)


NO_FACTS = RequestFacts()
