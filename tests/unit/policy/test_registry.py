"""The action registry (Z1, Z2, Z5): roles, inheritance, registered actions and routes."""

from __future__ import annotations

import pytest

from garrison.config.settings import ActionDef, RoleDef, RouteDef
from garrison.errors import BadRequestError, ConfigError
from garrison.policy.registry import DEFAULT_REGISTRY, Registry, load_registry_file


@pytest.fixture(scope="module")
def registry() -> Registry:
    return load_registry_file(DEFAULT_REGISTRY)


@pytest.mark.req("Z1")
def test_default_roles_include_the_ones_below_them(registry: Registry) -> None:
    assert registry.effective_roles(["admin"]) >= {"admin", "support_lead", "support", "user"}
    assert registry.effective_roles(["support_lead"]) == {"support_lead", "support", "user"}
    assert registry.effective_roles(["support"]) == {"support", "user"}
    assert registry.effective_roles(["user"]) == {"user"}


@pytest.mark.req("Z1")
def test_permissions_are_least_privilege_per_role(registry: Registry) -> None:
    user = set(registry.permissions_for(["user"]))
    support = set(registry.permissions_for(["support"]))
    lead = set(registry.permissions_for(["support_lead"]))
    admin = set(registry.permissions_for(["admin"]))
    assert {"ticket.read", "ticket.create"} <= user
    assert not {"ticket.comment", "ticket.close", "user.read", "user.delete"} & user
    assert support - user == {"ticket.comment", "ticket.close", "user.read"}
    assert lead - support == {"ticket.assign", "ticket.reopen"}
    assert {"user.delete", "secret.read", "admin.api", "system.api", "metrics.read"} <= admin - lead


@pytest.mark.req("Z2")
def test_the_default_actions_carry_their_requirements(registry: Registry) -> None:
    close, delete, secret = (
        registry.actions[a] for a in ("ticket.close", "user.delete", "secret.read")
    )
    assert close.required_params == ("reason",)
    assert close.required_roles == ("support",)
    assert delete.required_params == ("reason",)
    assert delete.required_roles == ("admin",)
    assert secret.required_params == ("justification",)
    assert secret.required_roles == ("admin",)
    assert registry.actions["ticket.read"].own_resources_only
    assert all(a.requires_auth for n, a in registry.actions.items() if n != "health.read")


@pytest.mark.req("Z5")
@pytest.mark.parametrize(
    ("method", "path", "action"),
    [
        ("GET", "/admin/users", "admin.api"),
        ("DELETE", "/admin/api-keys/1", "admin.api"),
        ("GET", "/system/events", "system.api"),
        ("POST", "/system/compute/run", "system.api"),
        ("GET", "/metrics", "metrics.read"),
        ("GET", "//admin//users", "admin.api"),
        ("GET", "/./metrics", "metrics.read"),
        ("POST", "/v1/decide", "policy.decide"),
    ],
)
def test_admin_surfaces_map_to_admin_only_actions(
    registry: Registry, method: str, path: str, action: str
) -> None:
    match = registry.match_route(method, path)
    assert match is not None
    assert match.action == action
    assert registry.actions[action].required_roles in (("admin",), ())


@pytest.mark.req("Z2")
@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/administrator"), ("GET", "/metricsx"), ("GET", "/nothing"), ("GET", "/v1/decide")],
)
def test_unregistered_paths_match_nothing(registry: Registry, method: str, path: str) -> None:
    assert registry.match_route(method, path) is None


@pytest.mark.req("Z2")
def test_the_longest_prefix_wins() -> None:
    actions = {"a": ActionDef(), "b": ActionDef()}
    routes = [RouteDef(prefix="/api", action="a"), RouteDef(prefix="/api/admin/*", action="b")]
    registry = Registry.build({}, actions, routes)
    assert registry.match_route("GET", "/api/admin/x") == registry.match_route("PUT", "/api/admin")
    assert registry.match_route("GET", "/api/admin/x").action == "b"  # type: ignore[union-attr]
    assert registry.match_route("GET", "/api/other").action == "a"  # type: ignore[union-attr]


@pytest.mark.req("Z1", "Z2")
def test_a_registry_naming_unknown_roles_or_actions_is_refused() -> None:
    with pytest.raises(ConfigError) as caught:
        Registry.build(
            {"admin": RoleDef(includes=("ghost",))},
            {"x.y": ActionDef(required_roles=("nobody",))},
            [RouteDef(prefix="/p", action="missing"), RouteDef(prefix="rel", action="x.y")],
        )
    text = "\n".join(caught.value.problems)
    for expected in ("ghost", "nobody", "'missing' is not a registered action", "start with '/'"):
        assert expected in text


@pytest.mark.req("Z2")
@pytest.mark.parametrize("path", ["/public/../admin/users", "/../../etc", "/a/./b/../c?x=1"])
def test_traversal_is_refused_not_resolved(registry: Registry, path: str) -> None:
    """A router that matches the raw path serves ``/public/../admin`` under ``/public``; one that
    resolves it serves ``/admin``: no single route is safe, so none is chosen (``gateway.paths``)."""
    with pytest.raises(BadRequestError):
        registry.match_route("GET", path)


@pytest.mark.req("Z1")
def test_the_support_desk_example_is_the_default_role_set(registry: Registry) -> None:
    from pathlib import Path

    from garrison.app import policy_config
    from garrison.config import load_settings
    from garrison.policy.registry import registry_for

    example = Path(__file__).resolve().parents[3] / "examples" / "support-desk" / "garrison.toml"
    settings = load_settings(
        {"GARRISON_CONFIG": str(example), "GARRISON_DOTENV": "/nonexistent"},
        check_production=False,
    )
    assert registry_for(policy_config(settings)) == registry


@pytest.mark.req("Z1")
def test_the_team_example_has_admin_team_member_and_demo() -> None:
    from pathlib import Path

    from garrison.app import policy_config
    from garrison.config import load_settings
    from garrison.policy.registry import registry_for

    example = Path(__file__).resolve().parents[3] / "examples" / "team" / "garrison.toml"
    settings = load_settings(
        {"GARRISON_CONFIG": str(example), "GARRISON_DOTENV": "/nonexistent"},
        check_production=False,
    )
    team = registry_for(policy_config(settings))
    assert team.effective_roles(["admin"]) >= {"admin", "team_member", "demo"}
    assert team.effective_roles(["demo"]) == {"demo"}
    assert team.actions["pricing.get"].requires_auth is False
    assert "analytics.view" not in team.permissions_for(["demo"])
