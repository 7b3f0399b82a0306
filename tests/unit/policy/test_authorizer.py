"""Decisions with reasons (Z2, Z3): exact deny strings, fail-closed errors, reload, caching."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from garrison.audit.event import AuditEvent
from garrison.errors import ConfigError
from garrison.policy import Authorizer, Resource
from garrison.policy.registry import DEFAULT_REGISTRY, load_registry_file
from garrison.principal import Principal


def _who(*roles: str, tenant: str | None = "acme", sub: str = "u1") -> Principal:
    return Principal(sub, sub, frozenset(roles), tenant, "jwt")


@pytest.mark.req("Z3")
def test_missing_parameter_reason_is_exact(authorizer: Authorizer) -> None:
    decision = authorizer.decide(_who("support"), "ticket.close")
    assert (decision.allow, decision.reasons) == (False, ("missing parameter: reason",))
    assert authorizer.decide(_who("support"), "ticket.close", params={"reason": "done"}).allow


@pytest.mark.req("Z3")
def test_role_mismatch_reason_is_exact(authorizer: Authorizer) -> None:
    decision = authorizer.decide(_who("support"), "user.delete", params={"reason": "gdpr"})
    assert decision.reasons == ("role mismatch: user.delete requires admin",)
    both = authorizer.decide(_who("support"), "user.delete")
    assert both.reasons == (
        "role mismatch: user.delete requires admin",
        "missing parameter: reason",
    )


@pytest.mark.req("Z3", "T1")
def test_tenant_mismatch_reason_is_exact(authorizer: Authorizer) -> None:
    other = Resource(type="ticket", id="t1", tenant="globex")
    decision = authorizer.decide(_who("support"), "ticket.comment", resource=other)
    assert decision.reasons == ("tenant mismatch",)
    acting_elsewhere = authorizer.decide(_who("admin"), "user.read", tenant="globex")
    assert acting_elsewhere.reasons == ("tenant mismatch",)


@pytest.mark.req("Z2", "Z3")
def test_an_unregistered_action_is_denied_with_a_reason(authorizer: Authorizer) -> None:
    decision = authorizer.decide(_who("admin", tenant=None), "x")
    assert (decision.allow, decision.reasons) == (False, ("unknown action: x",))
    assert decision.policy_version == authorizer.version


@pytest.mark.req("Z2")
def test_no_policy_can_open_an_unregistered_action(policy_dir: Path) -> None:
    (policy_dir / "zz_open.cedar").write_text("permit (principal, action, resource);\n")
    authorizer = Authorizer(load_registry_file(DEFAULT_REGISTRY), policy_dir)
    assert authorizer.decide(_who("admin", tenant=None), "shell.exec").reasons == (
        "unknown action: shell.exec",
    )


@pytest.mark.req("Z2")
def test_anonymous_callers_get_only_public_actions(authorizer: Authorizer) -> None:
    assert authorizer.decide(None, "health.read").allow
    denied = authorizer.decide(None, "ticket.read")
    assert not denied.allow
    assert "authentication required: ticket.read" in denied.reasons


@pytest.mark.req("Z3")
def test_a_policy_that_errors_while_evaluating_denies(policy_dir: Path) -> None:
    # Cedar skips an erroring forbid; Garrison must not read that as "nothing forbids".
    (policy_dir / "zz_overflow.cedar").write_text(
        '@id("overflow")\n'
        "forbid (principal, action, resource)\n"
        'when { context.action == "user.read" && 9223372036854775807 + 1 > 0 };\n'
    )
    authorizer = Authorizer(load_registry_file(DEFAULT_REGISTRY), policy_dir)
    decision = authorizer.decide(_who("admin"), "user.read")
    assert (decision.allow, decision.reasons) == (False, ("policy error: overflow",))
    assert authorizer.decide(_who("admin"), "user.read", tenant="acme").allow is False
    assert authorizer.decide(_who("admin"), "ticket.comment").allow  # other actions unaffected


@pytest.mark.req("Z3")
def test_policies_that_fail_schema_validation_are_refused(policy_dir: Path) -> None:
    (policy_dir / "zz_bad.cedar").write_text(
        "permit (principal, action, resource) when { principal.no_such_attribute };\n"
    )
    with pytest.raises(ConfigError, match="no_such_attribute"):
        Authorizer(load_registry_file(DEFAULT_REGISTRY), policy_dir)


@pytest.mark.req("Z3")
def test_a_deployment_cannot_bring_its_own_schema(policy_dir: Path) -> None:
    """The request schema is Garrison's: a directory reshaping it (and so every request) is refused."""
    (policy_dir / "schema.cedarschema").write_text("namespace Garrison { }\n")
    with pytest.raises(ConfigError, match="schema is Garrison's own"):
        Authorizer(load_registry_file(DEFAULT_REGISTRY), policy_dir)


@pytest.mark.req("Z3")
def test_a_deployment_cannot_replace_the_base_policies(policy_dir: Path) -> None:
    """A ``garrison.cedar`` that drops, say, the tenant rules is refused, never used instead."""
    (policy_dir / "garrison.cedar").write_text("permit (principal, action, resource);\n")
    with pytest.raises(ConfigError, match="base policies are always applied"):
        Authorizer(load_registry_file(DEFAULT_REGISTRY), policy_dir)


def _touch_later(path: Path) -> None:
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))


@pytest.mark.req("Z3")
def test_reload_swaps_in_a_new_version_without_a_restart(
    authorizer: Authorizer, policy_dir: Path
) -> None:
    before = authorizer.version
    assert authorizer.decide(_who("support"), "ticket.comment").allow
    assert authorizer.reload() is False  # nothing changed
    extra = policy_dir / "zz_freeze.cedar"
    extra.write_text(
        '@id("freeze")\n@reason("comments are frozen")\n'
        'forbid (principal, action, resource) when { context.action == "ticket.comment" };\n'
    )
    assert authorizer.reload() is True
    decision = authorizer.decide(_who("support"), "ticket.comment")
    assert (decision.allow, decision.reasons) == (False, ("comments are frozen",))
    assert decision.policy_version == authorizer.version != before


@pytest.mark.req("Z3")
def test_a_broken_reload_keeps_the_running_version(
    authorizer: Authorizer, policy_dir: Path
) -> None:
    before = authorizer.version
    broken = policy_dir / "deployment.cedar"
    broken.write_text("permit (principal, action, resource) when {")
    _touch_later(broken)
    assert authorizer.reload() is False
    assert authorizer.version == before
    assert authorizer.decide(_who("support"), "ticket.close").reasons == (
        "missing parameter: reason",
    )


@pytest.mark.req("Z3")
def test_repeated_decisions_come_from_the_cache(authorizer: Authorizer) -> None:
    first = authorizer.decide(_who("support"), "ticket.close", params={"reason": "x"})
    again = authorizer.decide(_who("support"), "ticket.close", params={"reason": "y"})
    assert again is first  # same facts (parameter names, not values), same answer object
    other = authorizer.decide(_who("support", sub="u2"), "ticket.close", params={"reason": "y"})
    assert other is not first


@pytest.mark.req("A7", "Z3")
def test_api_key_scopes_bound_the_decision(authorizer: Authorizer) -> None:
    key = Principal(
        "k", "k", frozenset({"support"}), "acme", "api_key", scopes=frozenset({"ticket.*"})
    )
    assert authorizer.decide(key, "ticket.comment").allow
    assert authorizer.decide(key, "user.read").reasons == (
        "scope mismatch: the API key does not cover user.read",
    )


@pytest.mark.req("A2", "Z1")
def test_permissions_for_feeds_the_token_claim(authorizer: Authorizer) -> None:
    assert "user.delete" in authorizer.permissions_for(["admin"])
    assert "user.delete" not in authorizer.permissions_for(["support_lead"])


@pytest.mark.req("Z3")
def test_sighup_or_the_file_watch_reloads_a_running_service(
    authorizer: Authorizer, policy_dir: Path
) -> None:
    import time

    from garrison.policy.watch import PolicyWatcher

    watcher = PolicyWatcher(authorizer, interval=3600).start()  # only a poke wakes it
    try:
        before = authorizer.version
        (policy_dir / "zz_pause.cedar").write_text(
            '@id("pause")\n@reason("maintenance")\n'
            'forbid (principal, action, resource) when { context.action == "user.read" };\n'
        )
        watcher.poke()  # what the SIGHUP handler does
        deadline = time.monotonic() + 10
        while authorizer.version == before and time.monotonic() < deadline:
            time.sleep(0.01)
        assert authorizer.decide(_who("support"), "user.read").reasons == ("maintenance",)
    finally:
        watcher.stop()


class _Sink:
    """An in-memory AuditSink: the watcher's own output, not a stand-in for a database."""

    def __init__(self) -> None:
        self.events: list[AuditEvent] = []

    async def record(self, event: AuditEvent) -> None:
        self.events.append(event)

    def record_sync(self, event: AuditEvent) -> None:
        self.events.append(event)


@pytest.mark.req("L2", "Z3")
def test_policy_reloads_and_refused_edits_are_audited(
    authorizer: Authorizer, policy_dir: Path
) -> None:
    from garrison.policy.watch import PolicyWatcher

    sink = _Sink()
    watcher = PolicyWatcher(authorizer, interval=3600, audit=sink)  # driven by hand: check()
    before = authorizer.version
    (policy_dir / "zz_pause.cedar").write_text(
        '@id("pause")\n@reason("maintenance")\n'
        'forbid (principal, action, resource) when { context.action == "user.read" };\n'
    )
    watcher.check()
    (policy_dir / "zz_broken.cedar").write_text("permit (principal, action, resource) when {")
    watcher.check()
    watcher.check()  # the same refusal again is not a new event
    assert [(e.action, e.outcome) for e in sink.events] == [
        ("config.policy.reload", "success"),
        ("config.policy.reload", "failure"),
    ]
    assert sink.events[0].details == {"from": before, "to": authorizer.version}
    assert authorizer.decide(_who("support"), "user.read").reasons == ("maintenance",)
