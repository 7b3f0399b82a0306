"""Which limits apply to a request, and whose budget each one spends (E3).

Every request spends the ``default`` group (``GARRISON_RATE_LIMIT_WINDOW_SEC`` /
``GARRISON_RATE_LIMIT_PER_WINDOW`` per identity, or a ``[rate_limits.default]`` table), plus each
group its route names (``RouteDef.rate_limit_group``) or whose ``prefixes`` match its path. A group
counts per ``identity`` (the user), ``api_key`` (the key), ``tenant`` or ``ip``; a request that has no
such attribute (anonymous, no tenant) falls back to its IP, so nobody escapes a limit by omission.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from garrison.config.defs import RateLimitDef
from garrison.principal import Principal

KeyKind = Literal["identity", "ip", "api_key", "tenant"]
DEFAULT_GROUP = "default"
_PATH_CACHE_SIZE = 10_000


@dataclass(frozen=True, slots=True)
class Rule:
    group: str
    limit: int
    window: int
    key: KeyKind

    def by_ip(self, principal: Principal | None, tenant: str | None) -> bool:
        """Whether this request's counter is its IP (so it cannot be computed ahead of time)."""
        if self.key == "ip":
            return True
        if self.key == "tenant":
            return tenant is None
        return principal is None

    def subject(self, principal: Principal | None, tenant: str | None, ip: str | None) -> str:
        """The counter this request spends, e.g. ``api:identity:u-42`` or ``default:ip:10.0.0.7``."""
        value: str | None = None
        kind: str = self.key
        if principal is not None:
            if self.key == "identity":
                value = principal.sub
            elif self.key == "api_key" and principal.via == "api_key":
                value = principal.credential_id
            elif self.key == "api_key":
                kind, value = "identity", principal.sub
        if self.key == "tenant":
            value = tenant
        if value is None:
            kind, value = "ip", ip or "unknown"
        return f"{self.group}:{kind}:{value}"


@dataclass(frozen=True, slots=True)
class RateLimitConfig:
    """The ``[rate_limits]`` groups, and the ``default`` group's limit when they define none
    (``GARRISON_RATE_LIMIT_PER_WINDOW`` per ``GARRISON_RATE_LIMIT_WINDOW_SEC``, per identity).
    Built once by the composition root (issue 8)."""

    groups: Mapping[str, RateLimitDef] = field(default_factory=dict)
    window: int = 60
    per_window: int = 6000


def _rule(group: str, spec: RateLimitDef) -> Rule:
    return Rule(group, spec.rate_limit_per_window, spec.rate_limit_window_sec, spec.key)


class RateRules:
    """The configured groups, resolved once; per-path lookups are cached."""

    def __init__(self, config: RateLimitConfig) -> None:
        groups = dict(config.groups)
        default = groups.pop(DEFAULT_GROUP, None) or RateLimitDef(
            rate_limit_window_sec=config.window,
            rate_limit_per_window=config.per_window,
            key="identity",
        )
        self.default = _rule(DEFAULT_GROUP, default)
        self.groups = {name: _rule(name, spec) for name, spec in groups.items()}
        self._prefixed = sorted(
            (
                (prefix, self.groups[name])
                for name, spec in groups.items()
                for prefix in spec.prefixes
            ),
            key=lambda item: -len(item[0]),
        )
        self._by_path: dict[tuple[str, str | None], tuple[Rule, ...]] = {}

    def for_request(self, path: str, group: str | None = None) -> tuple[Rule, ...]:
        cache_key = (path, group)
        found = self._by_path.get(cache_key)
        if found is None:
            found = self._resolve(path, group)
            if len(self._by_path) >= _PATH_CACHE_SIZE:
                self._by_path.clear()
            self._by_path[cache_key] = found
        return found

    def _resolve(self, path: str, group: str | None) -> tuple[Rule, ...]:
        rules = [self.default]
        named = self.groups.get(group) if group else None
        if named is not None:
            rules.append(named)
        for prefix, rule in self._prefixed:
            if path.startswith(prefix) and rule not in rules:
                rules.append(rule)
        return tuple(rules)
