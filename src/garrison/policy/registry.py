"""The action registry (Z1, Z2, Z5): roles with inheritance, registered actions, routes.

Every action a caller can ask for is named here with ``requires_auth``, ``required_roles`` and its
required parameters; anything else is unknown and denied before any policy runs, so no policy can
open an unregistered action. When ``garrison.toml`` declares no roles and actions, the packaged
support-desk set (``defaults/registry.toml``) is the default.
"""

from __future__ import annotations

import functools
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError as PydanticValidationError

from garrison.config.defs import ActionDef, RoleDef, RouteDef
from garrison.errors import BadRequestError, ConfigError
from garrison.paths import AmbiguousPath, canonicalize, covers, route_prefix
from garrison.policy.config import PolicyConfig
from garrison.policy.engine import DEFAULTS_DIR
from garrison.policy.model import RouteMatch

DEFAULT_REGISTRY = DEFAULTS_DIR / "registry.toml"
OWN_ACTIONS = DEFAULTS_DIR / "own_actions.toml"


@dataclass(frozen=True, slots=True)
class Registry:
    roles: Mapping[str, RoleDef]
    actions: Mapping[str, ActionDef]
    routes: tuple[RouteDef, ...]
    #: role -> itself plus every role it includes, transitively
    closure: Mapping[str, frozenset[str]]
    #: per route (same order): its canonical prefix, and that prefix in lower case
    prefixes: tuple[tuple[str, str], ...] = ()

    @classmethod
    def build(
        cls,
        roles: Mapping[str, RoleDef],
        actions: Mapping[str, ActionDef],
        routes: Iterable[RouteDef],
    ) -> Registry:
        routes = tuple(routes)
        own = own_actions()
        _check(roles, actions, routes, own)
        actions = {**actions, **own}
        closure = {name: _closure(name, roles) for name in roles}
        ordered = tuple(sorted(routes, key=lambda r: len(route_prefix(r.prefix)), reverse=True))
        prefixes = tuple((p, p.lower()) for p in (route_prefix(r.prefix) for r in ordered))
        return cls(dict(roles), dict(actions), ordered, closure, prefixes)

    def effective_roles(self, roles: Iterable[str]) -> frozenset[str]:
        """The roles held plus all they include; a role the registry does not know grants nothing
        beyond its own name."""
        out: set[str] = set()
        for role in roles:
            out |= self.closure.get(role, frozenset((role,)))
        return frozenset(out)

    def permissions_for(self, roles: Sequence[str]) -> list[str]:
        """The actions these roles may call (role-wise; policies may still deny a given call)."""
        held = self.effective_roles(roles)
        return sorted(
            name
            for name, action in self.actions.items()
            if not action.required_roles or held & set(action.required_roles)
        )

    def match_route(self, method: str, path: str) -> RouteMatch | None:
        """The longest registered prefix (segment-wise) that covers the canonical path.

        A route matches in letter case as written unless it sets ``case_insensitive``. A path that
        only a case-blind reading puts under a longer, case-sensitive route (``/API/admin`` with
        ``/api/admin`` registered) is refused with 400 instead of falling back to a shorter route:
        a case-insensitive backend would serve it as ``/api/admin``.
        """
        try:
            clean = canonicalize(path)
        except AmbiguousPath as exc:
            raise BadRequestError(f"ambiguous path: {exc.reason}", code="ambiguous_path") from None
        folded = clean.lower()
        blind = folded != clean  # the path has upper case: a case-blind reading may differ
        verb = method.upper()
        for route, (prefix, lowered) in zip(self.routes, self.prefixes, strict=True):
            if route.methods and verb not in route.methods:
                continue
            if covers(prefix, clean):
                return RouteMatch(route.action, route)
            if (blind or lowered != prefix) and covers(lowered, folded):
                if route.case_insensitive:
                    return RouteMatch(route.action, route)
                raise BadRequestError(
                    f"ambiguous path: it differs only in letter case from the route "
                    f"{route.prefix!r} (set case_insensitive = true on the route if the backend "
                    "ignores case)",
                    code="ambiguous_path",
                )
        return None


def _closure(role: str, roles: Mapping[str, RoleDef]) -> frozenset[str]:
    seen: set[str] = set()
    todo = [role]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(roles[name].includes if name in roles else ())
    return frozenset(seen)


@functools.cache
def _own_actions() -> tuple[tuple[str, ActionDef], ...]:
    data = tomllib.loads(OWN_ACTIONS.read_text(encoding="utf-8"))
    return tuple((k, ActionDef.model_validate(v)) for k, v in data["actions"].items())


def own_actions() -> dict[str, ActionDef]:
    """Garrison's own endpoints as registered actions (``defaults/own_actions.toml``)."""
    return dict(_own_actions())


def _check(
    roles: Mapping[str, RoleDef],
    actions: Mapping[str, ActionDef],
    routes: Sequence[RouteDef],
    own: Mapping[str, ActionDef],
) -> None:
    problems: list[str] = [
        f"actions.{name!r}: one of Garrison's own actions; it cannot be redefined"
        for name in actions
        if name in own
    ]
    for name, role in roles.items():
        problems += [
            f"roles.{name}: includes unknown role {r!r}" for r in role.includes if r not in roles
        ]
    for name, action in actions.items():
        for field in ("required_roles", "owner_exempt_roles"):
            problems += [
                f"actions.{name!r}.{field}: unknown role {r!r}"
                for r in getattr(action, field)
                if r not in roles
            ]
    for i, route in enumerate(routes):
        if not route.prefix.startswith("/"):
            problems.append(f"routes[{i}].prefix: must start with '/'")
            continue
        try:
            route_prefix(route.prefix)
        except AmbiguousPath as exc:
            problems.append(f"routes[{i}].prefix: no request path can match it: {exc.reason}")
        if route.action not in actions and route.action not in own:
            problems.append(f"routes[{i}].action: {route.action!r} is not a registered action")
    problems += _overlaps(routes)
    if problems:
        raise ConfigError(problems)


def _overlaps(routes: Sequence[RouteDef]) -> list[str]:
    """Two routes one request could match (same canonical prefix, a method in common): which one
    decides would depend on their order in the file, so the configuration is refused."""
    keyed: list[tuple[RouteDef, str]] = []
    for route in routes:
        try:
            keyed.append((route, route_prefix(route.prefix)))
        except AmbiguousPath:
            continue  # reported by _check
    problems = []
    for i, (a, pa) in enumerate(keyed):
        for b, pb in keyed[i + 1 :]:
            blind = a.case_insensitive or b.case_insensitive
            if (pa.lower() == pb.lower()) if blind else pa == pb:
                if a.methods and b.methods and not set(a.methods) & set(b.methods):
                    continue
                both = sorted(set(a.methods) & set(b.methods)) or sorted({*a.methods, *b.methods})
                which = ", ".join(both) if both else "every method"
                problems.append(
                    f"routes {a.prefix!r} ({a.action}) and {b.prefix!r} ({b.action}) both match "
                    f"{which}: give routes with one prefix disjoint methods"
                )
    return problems


def registry_for(config: PolicyConfig) -> Registry:
    """The registry ``garrison.toml`` declares, or the packaged default when it declares none."""
    if config.roles or config.actions:
        return Registry.build(config.roles, config.actions, config.routes)
    return load_registry_file(DEFAULT_REGISTRY, extra_routes=config.routes)


def load_registry_file(path: Path, *, extra_routes: Iterable[RouteDef] = ()) -> Registry:
    """A registry from a TOML file holding ``[roles]``, ``[actions]`` and ``[[routes]]``."""
    try:
        data: dict[str, Any] = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError([f"{path}: cannot read the action registry: {exc}"]) from None
    try:
        roles = {k: RoleDef.model_validate(v) for k, v in data.get("roles", {}).items()}
        actions = {k: ActionDef.model_validate(v) for k, v in data.get("actions", {}).items()}
        routes = [RouteDef.model_validate(v) for v in data.get("routes", [])]
    except PydanticValidationError as exc:
        raise ConfigError([f"{path}: {err['loc']}: {err['msg']}" for err in exc.errors()]) from None
    return Registry.build(roles, actions, [*routes, *extra_routes])
