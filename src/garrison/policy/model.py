"""The value types of authorization: what is acted on, and what was decided (with why)."""

from __future__ import annotations

from dataclasses import dataclass

from garrison.config.settings import RouteDef


@dataclass(frozen=True, slots=True)
class Resource:
    """The thing acted on. ``tenant`` None means untagged: no tenancy constraint applies."""

    type: str | None = None
    id: str | None = None
    tenant: str | None = None
    owner: str | None = None


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
