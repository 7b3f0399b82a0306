"""What authorization reads from the settings, built once by the composition root (issue 8)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from garrison.config.defs import ActionDef, RoleDef, RouteDef
from garrison.policy.engine import DEFAULTS_DIR


@dataclass(frozen=True, slots=True)
class PolicyConfig:
    """The registry ``garrison.toml`` declares (none: the packaged support-desk set), the policy
    directory (resolved; the packaged set by default) and ``REQUIRE_JWT_FOR_ADMIN`` (A7)."""

    policy_dir: Path = DEFAULTS_DIR
    roles: Mapping[str, RoleDef] = field(default_factory=dict)
    actions: Mapping[str, ActionDef] = field(default_factory=dict)
    routes: tuple[RouteDef, ...] = ()
    jwt_required_for_admin: bool = True
    mfa_required_for_admin: bool = False  # GARRISON_REQUIRE_MFA_FOR_ADMIN (A14)
