"""Prometheus signals (L6, L8): one registry per service instance, never the global default.

Every package reports through these few methods; ``/metrics`` renders ``registry``.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from garrison.audit.event import AuditEvent

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "garrison_http_requests_total",
            "HTTP requests by route, method and status.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self._request_children: dict[tuple[str, str, int], Counter] = {}
        self.latency = Histogram(
            "garrison_http_request_duration_seconds",
            "HTTP request latency by route.",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.auth_failures = Counter(
            "garrison_auth_failures_total",
            "Failed authentications by reason.",
            ["reason"],
            registry=self.registry,
        )
        self.lockouts = Counter(
            "garrison_auth_lockouts_total",
            "Accounts that reached their account-wide failure ceiling, by throttle scope.",
            ["scope"],
            registry=self.registry,
        )
        self.policy_denies = Counter(
            "garrison_policy_denies_total",
            "Authorization denies by reason.",
            ["reason"],
            registry=self.registry,
        )
        self.rate_limit_hits = Counter(
            "garrison_rate_limited_total",
            "Requests refused by a rate limit, by group.",
            ["group"],
            registry=self.registry,
        )
        self.limiter_errors = Counter(
            "garrison_rate_limiter_errors_total",
            "Rate limiter backend failures (Redis unreachable).",
            registry=self.registry,
        )
        self.unavailable = Counter(
            "garrison_unavailable_total",
            "Requests answered 503 because a dependency was away, by dependency.",
            ["dependency"],
            registry=self.registry,
        )
        self.admin_actions = Counter(
            "garrison_admin_actions_total",
            "Administrative actions by action.",
            ["action"],
            registry=self.registry,
        )
        self.audit_backlog = Gauge(
            "garrison_audit_backlog",
            "Audit records accepted but not yet committed.",
            registry=self.registry,
        )

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(route, method, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def count_request(self, route: str, method: str, status: int) -> None:
        """The hot path's share: a counter only (no clock read, no histogram), its labelled child
        looked up once (``labels()`` costs three times the increment)."""
        key = (route, method, status)
        child = self._request_children.get(key)
        if child is None:
            child = self._request_children[key] = self.requests.labels(route, method, str(status))
        child.inc()

    def auth_failure(self, reason: str) -> None:
        self.auth_failures.labels(reason).inc()

    def policy_deny(self, reason: str) -> None:
        # the reason's kind, not its text: label values must stay few
        self.policy_denies.labels(reason.split(":", 1)[0]).inc()

    def rate_limited(self, group: str) -> None:
        self.rate_limit_hits.labels(group).inc()

    def dependency_unavailable(self, dependency: str) -> None:
        self.unavailable.labels(dependency[:20]).inc()

    def admin_action(self, action: str) -> None:
        self.admin_actions.labels(action).inc()

    def set_audit_backlog(self, records: int) -> None:
        self.audit_backlog.set(records)

    def audited(self, event: AuditEvent) -> None:
        """Signals read off the audit trail, so every audited failure is also counted.

        Failed or refused logins, refreshes and the like (``auth.*``) count by reason; an
        ``auth.lockout`` (an account-wide failure ceiling reached) counts as a lockout; a
        successful ``admin.*`` action counts by action. ``auth.api_key`` records count a key's uses
        (one record per key and second), not failures; refused credentials and policy denies are
        counted where they are decided (the admission pipeline), so never twice.
        """
        if event.action == "auth.api_key":
            return
        if event.action == "auth.lockout":  # an incident, not one more failed attempt
            self.lockouts.labels(str(event.details.get("scope", "login"))[:20]).inc()
            return
        if event.action.startswith("auth.") and event.outcome in ("failure", "deny"):
            self.auth_failure((event.reason or event.action)[:60])
        elif event.action.startswith("admin.") and event.outcome == "success":
            self.admin_action(event.action)
