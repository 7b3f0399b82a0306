"""The ``Authorizer``: registry gate, then the Cedar bundle, then deny reasons; cached (Z2, Z3).

``decide`` is synchronous and does no I/O: the registry is in memory, the policies are compiled, and
answers are memoised per (subject facts, action, resource, parameter names, tenant) until the next
reload. The bundle, registry and cache are swapped together as one immutable ``_State``, so a
decision never mixes two policy versions.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from garrison.config.defs import RouteDef
from garrison.policy.config import PolicyConfig
from garrison.policy.engine import (
    ACTION_UID,
    PolicyBundle,
    PolicyLoadError,
    fingerprint,
    load_bundle,
)
from garrison.policy.model import NO_FACTS, Decision, RequestFacts, Resource, RouteMatch
from garrison.policy.registry import Registry, registry_for
from garrison.principal import Principal

log = logging.getLogger("garrison.policy")

_MAX_ACTION_IN_REASON = 120
ADMIN_ROLE = "admin"


@dataclass(slots=True)
class _State:
    registry: Registry
    bundle: PolicyBundle
    version: str
    cache: dict[Hashable, Decision] = field(default_factory=dict)


class Authorizer:
    def __init__(
        self,
        registry: Registry,
        policy_dir: Path,
        *,
        cache_size: int = 65_536,
        jwt_required_for_admin: bool = True,
        mfa_required_for_admin: bool = False,
    ) -> None:
        self.policy_dir = policy_dir
        self.cache_size = cache_size
        #: ``REQUIRE_JWT_FOR_ADMIN`` (A7): an API key alone never holds the admin role, for any
        #: action (admin actions, acting in another tenant, the vault); decided here and only here
        self.jwt_required_for_admin = jwt_required_for_admin
        #: ``GARRISON_REQUIRE_MFA_FOR_ADMIN`` (A14): the policy ``admin-needs-mfa`` refuses admin
        #: actions to a signed-in admin whose ``amr`` names no second factor
        self.mfa_required_for_admin = mfa_required_for_admin
        self._lock = threading.Lock()
        #: why the last reload was refused (None once a reload succeeds): audited by the watcher
        self.last_reload_error: str | None = None
        self._state = self._build(registry, load_bundle(policy_dir))

    @classmethod
    def from_config(cls, config: PolicyConfig, *, cache_size: int = 65_536) -> Authorizer:
        return cls(
            registry_for(config),
            config.policy_dir,
            cache_size=cache_size,
            jwt_required_for_admin=config.jwt_required_for_admin,
            mfa_required_for_admin=config.mfa_required_for_admin,
        )

    @property
    def version(self) -> str:
        return self._state.version

    @property
    def registry(self) -> Registry:
        return self._state.registry

    @property
    def bundle(self) -> PolicyBundle:
        """The compiled policies in force (benchmarks and diagnostics)."""
        return self._state.bundle

    # -- decisions -------------------------------------------------------------------------
    def decide(
        self,
        subject: Principal | None,
        action: str,
        *,
        resource: Resource | None = None,
        params: Mapping[str, Any] | None = None,
        tenant: str | None = None,
        facts: RequestFacts = NO_FACTS,
    ) -> Decision:
        """Allow or deny with reasons; never raises for a deny. ``subject=None`` is anonymous."""
        state = self._state
        if action not in state.registry.actions:
            return Decision(
                False, (f"unknown action: {action[:_MAX_ACTION_IN_REASON]}",), state.version, action
            )
        present = _present(params)
        key = (_subject_key(subject), action, resource, present, tenant, facts)
        found = state.cache.get(key)
        if found is not None:
            return found
        decision = self._evaluate(state, subject, action, resource, present, tenant, facts)
        if self.cache_size:
            if len(state.cache) >= self.cache_size:
                state.cache.clear()
            state.cache[key] = decision
        return decision

    def _evaluate(
        self,
        state: _State,
        subject: Principal | None,
        action: str,
        resource: Resource | None,
        present: frozenset[str],
        tenant: str | None,
        facts: RequestFacts,
    ) -> Decision:
        registry = state.registry
        spec = registry.actions[action]
        held = self.granted_roles(subject)
        withheld = subject is not None and len(held) != len(subject.roles)
        roles = registry.effective_roles(held)
        acting_in = tenant if tenant is not None else (subject.tenant if subject else None)
        context = spec_context(action, spec, present, acting_in)
        route = facts.route
        context.update(
            tenant_header_missing=facts.tenant_header_missing,
            admin_withheld=withheld,
            route=route.prefix if route is not None else "",
            route_roles=list(route.required_roles) if route is not None else [],
            mfa_required_for_admin=self.mfa_required_for_admin,
        )
        request, entities = cedar_request(subject, roles, action, context, resource)
        outcome = state.bundle.evaluate(request, entities)
        if outcome.allow:
            return Decision(True, (), state.version, action)
        reasons = [f"policy error: {name}" for name in outcome.errored]
        render = _Facts(action, spec.required_roles, spec.required_params, present, route)
        for policy in outcome.determining:
            reasons.extend(render.render(policy.reason or f"denied by policy {policy.name}"))
        if not reasons:
            reasons.append(f"no policy permits {action}")
        return Decision(False, tuple(dict.fromkeys(reasons)), state.version, action)

    def granted_roles(self, subject: Principal | None) -> frozenset[str]:
        """The roles a credential carries: the user's, less ``admin`` for an API key under
        ``REQUIRE_JWT_FOR_ADMIN`` (A7). What decisions use, and what upstreams are told."""
        if subject is None:
            return frozenset()
        if self.jwt_required_for_admin and subject.via == "api_key" and ADMIN_ROLE in subject.roles:
            return subject.roles - {ADMIN_ROLE}
        return subject.roles

    # -- registry views --------------------------------------------------------------------
    def match_route(self, method: str, path: str) -> RouteMatch | None:
        return self._state.registry.match_route(method, path)

    def permissions_for(self, roles: Sequence[str]) -> list[str]:
        return self._state.registry.permissions_for(roles)

    # -- reload ----------------------------------------------------------------------------
    def reload(self) -> bool:
        """Re-read the policy directory if it changed; True when a new version is live.

        A bundle that fails to load or validate is logged and refused: the running one stays.
        """
        with self._lock:
            current = self._state
            try:
                if fingerprint(self.policy_dir) == current.bundle.fingerprint:
                    return False
                bundle = load_bundle(self.policy_dir)
            except (OSError, PolicyLoadError) as exc:
                log.error("policy reload refused; keeping %s: %s", current.version, exc)
                self.last_reload_error = str(exc)
                return False
            self.last_reload_error = None
            fresh = self._build(current.registry, bundle)
            if fresh.version == current.version:
                current.bundle = bundle  # same content, new timestamps
                return False
            self._state = fresh
        log.info("policies reloaded: %s -> %s", current.version, fresh.version)
        return True

    @staticmethod
    def _build(registry: Registry, bundle: PolicyBundle) -> _State:
        dump = {
            "roles": {k: v.model_dump() for k, v in sorted(registry.roles.items())},
            "actions": {k: v.model_dump() for k, v in sorted(registry.actions.items())},
        }
        digest = hashlib.sha256(
            (bundle.digest + json.dumps(dump, sort_keys=True)).encode(), usedforsecurity=False
        ).hexdigest()
        return _State(registry, bundle, digest[:12])


@dataclass(frozen=True, slots=True)
class _Facts:
    """What a @reason template may name: {action}, {required_roles}, {missing_params}, {route},
    {route_roles}."""

    action: str
    required_roles: tuple[str, ...]
    required_params: tuple[str, ...]
    present: frozenset[str]
    route: RouteDef | None = None

    def render(self, template: str) -> Iterator[str]:
        route = self.route
        text = (
            template.replace("{action}", self.action)
            .replace("{required_roles}", " or ".join(self.required_roles))
            .replace("{route_roles}", " or ".join(route.required_roles) if route else "")
            .replace("{route}", route.prefix if route else "")
        )
        if "{missing_params}" not in text:
            yield text
            return
        for name in self.required_params:
            if name not in self.present:
                yield text.replace("{missing_params}", name)


def _present(params: Mapping[str, Any] | None) -> frozenset[str]:
    """Parameter names with a value: None and blank strings count as missing."""
    if not params:
        return frozenset()
    return frozenset(
        name
        for name, value in params.items()
        if value is not None and not (isinstance(value, str) and not value.strip())
    )


def _subject_key(subject: Principal | None) -> Hashable:
    if subject is None:
        return None
    return (
        subject.sub,
        subject.roles,
        subject.tenant,
        subject.via,
        subject.scopes,
        subject.amr,
        subject.password_change_required,
    )


def spec_context(
    action: str, spec: Any, present: frozenset[str], tenant: str | None
) -> dict[str, Any]:
    family = action.rsplit(".", 1)[0] + ".*" if "." in action else action
    return {
        "action": action,
        "family": family,
        "registered": True,
        "requires_auth": spec.requires_auth,
        "required_roles": list(spec.required_roles),
        "required_params": list(spec.required_params),
        "params": sorted(present),
        "own_only": spec.own_resources_only,
        "owner_exempt_roles": list(spec.owner_exempt_roles),
        "tenant": tenant or "",
        "platform_only": spec.platform_only,
        "self_service": spec.self_service,
        "tenant_header_missing": False,
        "admin_withheld": False,
        "route": "",
        "route_roles": [],
        "mfa_required_for_admin": False,
    }


def cedar_request(
    subject: Principal | None,
    roles: frozenset[str],
    action: str,
    context: dict[str, Any],
    resource: Resource | None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The Cedar request and entity list for one decision (shape: ``defaults/schema.cedarschema``)."""
    res = resource or Resource()
    user_uid = {"type": "Garrison::User", "id": subject.sub if subject else ""}
    res_uid = {"type": "Garrison::Resource", "id": f"{res.type or ''}/{res.id or ''}"}
    user = {
        "uid": user_uid,
        "attrs": {
            "sub": subject.sub if subject else "",
            "roles": sorted(roles),
            "tenant": (subject.tenant or "") if subject else "",
            "authenticated": subject is not None,
            "password_change_required": bool(subject and subject.password_change_required),
            "via": subject.via if subject else "anonymous",
            "scoped": bool(subject and subject.scopes is not None),
            "scopes": sorted(subject.scopes) if subject and subject.scopes else [],
            "amr": sorted(set(subject.amr)) if subject else [],
        },
        "parents": [],
    }
    thing = {
        "uid": res_uid,
        "attrs": {
            "kind": res.type or "",
            "tenant": res.tenant or "",
            "owner": res.owner or "",
            "platform": res.platform,
        },
        "parents": [],
    }
    request = {"principal": user_uid, "action": ACTION_UID, "resource": res_uid, "context": context}
    return request, [user, thing]
