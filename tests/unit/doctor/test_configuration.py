"""Configuration checks: what production would refuse is reported, with the fix (O4, C2, C3, ...)."""

from __future__ import annotations

from pathlib import Path

import pytest

from garrison.doctor import DoctorContext, Status
from tests.unit.doctor.conftest import LoadSettings, production_env, run_ids

PG = "postgresql://app@db.internal:5432/garrison?sslmode=verify-full"
CONFIG_IDS = (
    "operations.production-mode",
    "identity.secrets",
    "operations.database-url",
    "identity.jwt-for-admin",
    "identity.mfa-for-admin",
    "tenancy.tenant-header",
    "edge.hsts-setting",
    "edge.cors-setting",
    "operations.other-refusals",
)


@pytest.mark.req("O4", "C2", "C3", "A7", "T2", "E1", "A14")
def test_a_development_deployment_fails_the_production_checks(load: LoadSettings) -> None:
    results = run_ids(DoctorContext(load()), *CONFIG_IDS)
    failing = {i for i, c in results.items() if c.status is Status.FAIL}
    # MFA for admin is off in development by default: a warning there, a failure in production
    assert results["identity.mfa-for-admin"].status is Status.WARN
    assert failing == {
        "operations.production-mode",
        "identity.secrets",
        "operations.database-url",
        "identity.jwt-for-admin",
        "tenancy.tenant-header",
        "edge.hsts-setting",
    }
    assert "GARRISON_KEYRING_KEY: missing" in results["identity.secrets"].finding
    assert "garrison secrets generate" in results["identity.secrets"].fix
    assert results["operations.production-mode"].fix.startswith("set GARRISON_ENV=production")


@pytest.mark.req("O4", "C2", "C3", "A7", "T2", "E1", "E2", "A14")
def test_a_production_configuration_passes_them(load: LoadSettings) -> None:
    results = run_ids(DoctorContext(load(**production_env(PG))), *CONFIG_IDS)
    assert {i: c.status for i, c in results.items()} == dict.fromkeys(CONFIG_IDS, Status.PASS)
    assert results["operations.database-url"].finding.endswith("sslmode verify-full")


@pytest.mark.req("O4", "A14")
@pytest.mark.asvs("V6.3.3")
def test_production_without_mfa_for_admin_fails(load: LoadSettings) -> None:
    env = production_env(PG, GARRISON_REQUIRE_MFA_FOR_ADMIN="false")
    check = run_ids(DoctorContext(load(**env)), "identity.mfa-for-admin")["identity.mfa-for-admin"]
    assert check.status is Status.FAIL
    assert "GARRISON_REQUIRE_MFA_FOR_ADMIN is off in production" in check.finding
    assert "GARRISON_REQUIRE_MFA_FOR_ADMIN=true" in check.fix


@pytest.mark.req("O4", "C2")
@pytest.mark.parametrize("weak", ["changeme", "dev-token", "x" * 40, "short-but-random-Q7"])
def test_each_weak_secret_is_named(load: LoadSettings, weak: str) -> None:
    env = production_env(PG, SECRET_ENCRYPTION_KEY=weak)
    check = run_ids(DoctorContext(load(**env)), "identity.secrets")["identity.secrets"]
    assert check.status is Status.FAIL
    assert check.finding.startswith("SECRET_ENCRYPTION_KEY:")
    assert "GARRISON_KEYRING_KEY" not in check.finding


@pytest.mark.req("O4", "C3")
@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("postgresql://app@db/garrison", "sslmode"),
        ("postgresql://app@db/garrison?sslmode=prefer", "sslmode"),
        ("sqlite:////var/lib/garrison.db", "SQLite"),
    ],
)
def test_database_without_tls_or_on_sqlite_fails(load: LoadSettings, url: str, why: str) -> None:
    check = run_ids(DoctorContext(load(**production_env(url))), "operations.database-url")
    assert check["operations.database-url"].status is Status.FAIL
    assert why in check["operations.database-url"].finding


@pytest.mark.req("O4", "E2")
def test_wildcard_cors_fails(load: LoadSettings) -> None:
    env = production_env(PG, GARRISON_CORS_ORIGINS="https://app.example,*")
    check = run_ids(DoctorContext(load(**env)), "edge.cors-setting")["edge.cors-setting"]
    assert check.status is Status.FAIL
    assert "wildcard" in check.finding


@pytest.mark.req("O4", "E3")
def test_rate_limiter_states(load: LoadSettings) -> None:
    def status(**env: str) -> Status:
        ctx = DoctorContext(load(**production_env(PG, **env)))
        return run_ids(ctx, "edge.rate-limiter")["edge.rate-limiter"].status

    assert status(USE_REDIS_LIMITER="true", REDIS_URL="redis://r:6379/0") is Status.PASS
    assert status(USE_REDIS_LIMITER="true") is Status.FAIL  # on, but nowhere to count
    assert status(REDIS_URL="redis://r:6379/0") is Status.WARN  # Redis there, limiter per process
    assert status() is Status.WARN


@pytest.mark.req("O4", "E5")
def test_trusted_proxies(load: LoadSettings) -> None:
    def check(proxies: str | None) -> Status:
        env = production_env(PG, **({"GARRISON_TRUSTED_PROXIES": proxies} if proxies else {}))
        ctx = DoctorContext(load(**env))
        return run_ids(ctx, "edge.trusted-proxies")["edge.trusted-proxies"].status

    assert check("10.0.0.0/24,fd00::1") is Status.PASS
    assert check(None) is Status.WARN
    assert check("10.0.0.0/24,0.0.0.0/0") is Status.FAIL  # every address may forge X-Forwarded-For
    assert check("::/0") is Status.FAIL


@pytest.mark.req("O4", "A10", "C2")
def test_external_idp_secret_is_checked_where_it_is_read(load: LoadSettings) -> None:
    settings = load(**production_env(PG))
    idp = {"supabase": {"issuer": "https://sb", "audience": "", "hs256_secret_env": "SB_SECRET"}}
    settings = settings.model_validate({**settings.model_dump(), "external_idps": idp})
    ctx = DoctorContext(settings, environ={"SB_SECRET": "super-secret-jwt-token-with-at-least-32"})
    check = run_ids(ctx, "identity.external-idp-secrets")["identity.external-idp-secrets"]
    assert check.status is Status.FAIL
    assert "no audience" in check.finding
    assert "skipped" not in check.finding


@pytest.mark.req("O4", "L9", "E6", "A2")
def test_warn_level_settings(load: LoadSettings) -> None:
    ids = ("audit.tracing", "edge.force-https", "tokens.access-ttl")
    loose = run_ids(DoctorContext(load(**production_env(PG, GARRISON_ACCESS_TTL="86400"))), *ids)
    assert {c.status for c in loose.values()} == {Status.WARN}
    tight_env = production_env(
        PG, OTEL_EXPORTER_OTLP_ENDPOINT="http://otel:4318", GARRISON_FORCE_HTTPS="redirect"
    )
    tight = run_ids(DoctorContext(load(**tight_env)), *ids)
    assert {c.status for c in tight.values()} == {Status.PASS}


@pytest.mark.req("O4", "A11")
def test_oidc_scopes_and_redirects(load: LoadSettings) -> None:
    base = load(**production_env(PG))

    def check(provider: dict[str, object], environ: dict[str, str]) -> tuple[Status, str]:
        settings = base.model_validate({**base.model_dump(), "oidc": {"google": provider}})
        found = run_ids(DoctorContext(settings, environ=environ), "identity.oidc")["identity.oidc"]
        return found.status, found.finding

    good: dict[str, object] = {
        "issuer": "https://accounts.google.com",
        "client_id": "c",
        "client_secret_env": "G_SECRET",
        "redirect_uri": "https://auth.example/auth/oidc/google/callback",
    }
    assert check(good, {"G_SECRET": "s"})[0] is Status.PASS
    assert check({**good, "scopes": ["openid", "email", "drive"]}, {"G_SECRET": "s"}) == (
        Status.WARN,
        "google asks for drive",
    )
    status, finding = check({**good, "redirect_uri": "http://auth.example/cb"}, {})
    assert status is Status.FAIL
    assert "is not https" in finding
    assert "G_SECRET is not set" in finding


@pytest.mark.req("O4", "Z4", "Z3")
def test_policy_tests_run_and_a_broken_policy_set_fails(load: LoadSettings, tmp_path: Path) -> None:
    packaged = run_ids(DoctorContext(load()), "identity.policy-tests")["identity.policy-tests"]
    assert packaged.status is Status.PASS
    assert "decision(s) pass" in packaged.finding
    broken = tmp_path / "policies"
    broken.mkdir()
    (broken / "garrison.cedar").write_text("permit(principal, action, resource) when { oops };")
    ctx = DoctorContext(load(GARRISON_POLICY_DIR=str(broken)))
    found = run_ids(ctx, "identity.policy-tests")["identity.policy-tests"]
    assert found.status is Status.FAIL
    assert "garrison policy test" in found.fix


@pytest.mark.req("O4", "Z5")
def test_public_metrics_setting_warns(load: LoadSettings) -> None:
    ctx = DoctorContext(load(**production_env(PG, GARRISON_METRICS_PUBLIC="true")))
    found = run_ids(ctx, "operations.metrics-setting")["operations.metrics-setting"]
    assert found.status is Status.WARN
