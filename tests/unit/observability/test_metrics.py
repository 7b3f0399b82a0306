"""Signals (L6): what the audit trail and the request observer feed into the registry."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from starlette.testclient import TestClient

from garrison.app import Services
from garrison.audit.event import AuditEvent
from garrison.observability.asgi import UNMATCHED, RequestObserver, route_template
from garrison.observability.metrics import Metrics


def _value(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


@pytest.mark.req("L6")
def test_audited_events_feed_auth_failures_and_admin_actions_once() -> None:
    m = Metrics()
    m.audited(AuditEvent("auth.login", "failure", reason="bad password"))
    m.audited(AuditEvent("auth.login", "deny", reason="throttled"))
    m.audited(AuditEvent("auth.login", "success"))
    m.audited(AuditEvent("auth.api_key", "failure", reason="invalid API key"))  # the gate counts
    m.audited(AuditEvent("admin.user.disable", "success"))
    m.audited(AuditEvent("admin.user.disable", "failure"))
    total = "garrison_auth_failures_total"
    assert _value(m, total, reason="bad password") == 1.0
    assert _value(m, total, reason="throttled") == 1.0
    assert _value(m, total, reason="invalid API key") is None
    assert _value(m, "garrison_admin_actions_total", action="admin.user.disable") == 1.0


@pytest.mark.req("L6", "A13")
def test_a_lockout_is_counted_as_one_not_as_an_auth_failure() -> None:
    m = Metrics()
    details = {"scope": "login", "account": "alice", "failures": 100, "window": 900}
    m.audited(AuditEvent("auth.lockout", "deny", reason="ceiling", details=details))
    assert _value(m, "garrison_auth_lockouts_total", scope="login") == 1.0
    assert _value(m, "garrison_auth_failures_total", reason="ceiling") is None


class _Route:
    path = "/admin/users/{user_id}"


@pytest.mark.req("L6")
def test_the_observer_labels_by_template_and_counts_a_crash_as_500() -> None:
    m = Metrics()

    async def crashing(scope: Any, receive: Any, send: Any) -> None:
        scope["route"] = _Route()
        raise RuntimeError("boom")

    async def sink(_message: Any) -> None:
        pass

    async def receive() -> Any:
        return {"type": "http.request"}

    observer = RequestObserver(crashing, m)
    scope = {"type": "http", "method": "PATCH", "path": "/admin/users/u-1"}
    with pytest.raises(RuntimeError):
        asyncio.run(observer(scope, receive, sink))
    labels = {"route": "/admin/users/{user_id}", "method": "PATCH", "status": "500"}
    assert _value(m, "garrison_http_requests_total", **labels) == 1.0
    assert route_template({"type": "http"}) == UNMATCHED


@pytest.mark.req("L6", "E8")
def test_the_fast_path_is_counted_by_status(client: TestClient, services: Services) -> None:
    """/verify pays for no middleware, but its answers still reach the request counter."""
    for _ in range(2):
        response = client.get("/verify", headers={"X-Original-Method": "GET"})
        assert response.status_code == 400  # no original URI
    assert (
        client.get(
            "/verify", headers={"X-Original-Method": "GET", "X-Original-URI": "/x"}
        ).status_code
        == 401
    )
    labels = {"route": "/verify", "method": "GET"}
    assert _value(services.metrics, "garrison_http_requests_total", **labels, status="400") == 2.0
    assert _value(services.metrics, "garrison_http_requests_total", **labels, status="401") == 1.0
