"""The Grafana dashboard and the Prometheus alert rules (U3, L6): built only on metrics a live
Garrison exports, and the rules checked and unit-tested by the real ``promtool``."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml  # type: ignore[import-untyped]  # PyYAML, via uvicorn[standard]
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import PASSWORD
from tests.integration.edge_support import require
from tests.support import LiveServer, base_env, run_cli

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "deploy" / "grafana" / "garrison.json"
ALERTS = REPO / "deploy" / "prometheus" / "alerts.yml"
ALERTS_TEST = REPO / "deploy" / "prometheus" / "alerts_test.yml"
_METRIC = re.compile(r"\bgarrison_[a-z0-9_]+\b")


def dashboard_queries() -> list[str]:
    board = json.loads(DASHBOARD.read_text())
    queries = [
        target["expr"]
        for panel in board["panels"]
        for target in panel.get("targets", [])
        if "expr" in target
    ]
    queries += [
        v["query"]["query"] if isinstance(v.get("query"), dict) else str(v.get("query", ""))
        for v in board["templating"]["list"]
    ]
    return queries


def alert_queries() -> list[str]:
    doc = yaml.safe_load(ALERTS.read_text())
    return [str(rule["expr"]) for group in doc["groups"] for rule in group["rules"]]


@pytest.fixture
def traffic(tmp_path: Path) -> Iterator[LiveServer]:
    """Garrison with an admin and a user, behind a "proxy" (127.0.0.1 is trusted, so each request
    can come from its own client address), small limits so a burst is refused, and an account
    ceiling of three failures so a lockout happens."""
    env = base_env(
        tmp_path / "data",
        GARRISON_TRUSTED_PROXIES="127.0.0.0/8",
        GARRISON_RATE_LIMIT_PER_WINDOW="20",
        GARRISON_LOGIN_MAX_FAILURES="3",
        GARRISON_LOGIN_MAX_FAILURES_PER_ACCOUNT="3",
    )
    for name, role in (("root", "admin"), ("alice", "user")):
        args = (
            *("users", "create", "--username", name, "--role", role),
            *("--password-stdin", "--no-password-change"),
        )
        made = run_cli(*args, env=env, stdin=PASSWORD + "\n")
        assert made.returncode == 0, made.stderr
    with LiveServer(env) as server:
        yield server


def _from(n: int) -> dict[str, str]:
    return {"X-Forwarded-For": f"198.51.100.{n}"}


def _login(http: httpx.Client, username: str, password: str, n: int) -> httpx.Response:
    body = {"username": username, "password": password}
    return http.post("/auth/login", json=body, headers=_from(n))


def _exported(server: LiveServer) -> dict[str, set[frozenset[tuple[str, str]]]]:
    """What /metrics serves: every sample name, with the label sets it has."""
    with httpx.Client(base_url=server.url, timeout=10) as http:
        token = _login(http, "root", PASSWORD, 200).json()["access_token"]
        response = http.get("/metrics", headers={"Authorization": f"Bearer {token}", **_from(201)})
    assert response.status_code == 200, response.text
    samples: dict[str, set[frozenset[tuple[str, str]]]] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples.setdefault(sample.name, set()).add(frozenset(sample.labels.items()))
    return samples


def _make_traffic(server: LiveServer) -> None:
    with httpx.Client(base_url=server.url, timeout=10) as http:
        ok = _login(http, "alice", PASSWORD, 1)  # a login
        assert ok.status_code == 200, ok.text
        pair = ok.json()
        user = {"Authorization": f"Bearer {pair['access_token']}", **_from(1)}
        assert http.get("/admin/users", headers=user).status_code == 403  # a policy deny
        assert http.get("/no/such/path", headers=_from(2)).status_code == 404  # a 404
        for n in range(3, 6):  # three bad passwords from three addresses: the account locks
            assert _login(http, "alice", "not the password", n).status_code == 401
        assert _login(http, "alice", "not the password", 6).status_code == 429
        first = http.post("/auth/refresh", json={"refresh_token": pair["refresh_token"]})
        assert first.status_code == 200, first.text
        reuse = http.post("/auth/refresh", json={"refresh_token": pair["refresh_token"]})
        assert reuse.status_code == 401  # a refresh token used twice
        admin = _login(http, "root", PASSWORD, 7).json()["access_token"]
        made = http.post(  # an admin action
            "/admin/users",
            json={"username": "bob", "password": "a long passphrase", "roles": ["user"]},
            headers={"Authorization": f"Bearer {admin}", **_from(7)},
        )
        assert made.status_code == 201, made.text
        statuses = {http.get("/auth/me", headers=_from(8)).status_code for _ in range(25)}
        assert 429 in statuses  # a burst from one address is refused


@pytest.mark.req("U3", "L6")
def test_every_metric_of_the_dashboard_and_the_alerts_is_exported(traffic: LiveServer) -> None:
    _make_traffic(traffic)
    exported = _exported(traffic)
    queries = dashboard_queries() + alert_queries()
    used = {name for query in queries for name in _METRIC.findall(query)}
    assert {
        "garrison_http_requests_total",
        "garrison_http_request_duration_seconds_bucket",
        "garrison_auth_failures_total",
        "garrison_policy_denies_total",
        "garrison_admin_actions_total",
        "garrison_audit_backlog",
    } <= used, "the dashboard lost one of its panels"
    missing = sorted(used - set(exported))
    assert not missing, f"queried but not exported by /metrics: {missing}"
    # the label values the alerts and panels select on are ones Garrison really sets
    reasons = {dict(labels).get("reason") for labels in exported["garrison_auth_failures_total"]}
    assert "refresh token reused" in reasons  # GarrisonRefreshTokenReuse
    statuses = {dict(labels)["status"] for labels in exported["garrison_http_requests_total"]}
    assert {"200", "403", "404", "429"} <= statuses
    buckets = exported["garrison_http_request_duration_seconds_bucket"]
    assert all("le" in dict(labels) and "route" in dict(labels) for labels in buckets)
    actions = {dict(labels)["action"] for labels in exported["garrison_admin_actions_total"]}
    assert actions, "no admin action counted"


@pytest.mark.req("U3")
def test_dashboard_is_grafana_json_with_the_panels_asked_for() -> None:
    board: dict[str, Any] = json.loads(DASHBOARD.read_text())
    assert board["uid"]
    assert board["title"] == "Garrison"
    assert board["schemaVersion"] >= 36
    titles = {p["title"] for p in board["panels"] if p["type"] != "row"}
    assert {
        "Request rate by route",
        "4xx and 5xx error rates",
        "Latency p50 and p99",
        "Authentication failures by reason",
        "Policy denies by reason",
        "Admin actions",
        "Audit writer backlog",
    } <= titles
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    latency = next(p for p in board["panels"] if p["title"] == "Latency p50 and p99")
    exprs = [t["expr"] for t in latency["targets"]]
    assert any("histogram_quantile(0.5," in e for e in exprs)
    assert any("histogram_quantile(0.99," in e for e in exprs)
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            assert target["expr"].count("(") == target["expr"].count(")"), target["expr"]
            assert target["datasource"]["uid"] == "${datasource}"


def _promtool() -> str:
    return require("promtool")


@pytest.mark.req("U3", "L6")
def test_promtool_checks_the_rules() -> None:
    run = subprocess.run(
        [_promtool(), "check", "rules", str(ALERTS)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "SUCCESS" in run.stdout + run.stderr


@pytest.mark.req("U3", "L6")
def test_promtool_unit_tests_every_alert_firing_and_not(tmp_path: Path) -> None:
    promtool = _promtool()
    tested = yaml.safe_load(ALERTS_TEST.read_text())
    checks = [c for t in tested["tests"] for c in t["alert_rule_test"]]
    alerts = {
        rule["alert"]
        for group in yaml.safe_load(ALERTS.read_text())["groups"]
        for rule in group["rules"]
    }
    assert {c["alertname"] for c in checks if c["exp_alerts"]} == alerts, "an alert never fires"
    assert {c["alertname"] for c in checks if not c["exp_alerts"]} == alerts, "nor stays quiet"
    run = subprocess.run(
        [promtool, "test", "rules", str(ALERTS_TEST)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    # and the tests can fail: rules that never fire do not pass them
    shutil.copy(ALERTS_TEST, tmp_path / "alerts_test.yml")
    broken = yaml.safe_load(ALERTS.read_text())
    for group in broken["groups"]:
        for rule in group["rules"]:
            rule["expr"] = "vector(0) > 1"
    (tmp_path / "alerts.yml").write_text(yaml.safe_dump(broken))
    run = subprocess.run(
        [promtool, "test", "rules", str(tmp_path / "alerts_test.yml")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode != 0, run.stdout
