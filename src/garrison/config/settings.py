"""The frozen, validated settings: read by the entry points and the composition root
(``garrison.app``), which gives each feature its own frozen config; the domain never imports them.

Settings are built once at start-up (``garrison.config.load_settings``) and never read again from
the environment; a bad value fails the start, not a request. Field aliases are the public setting
names of API.md (``DATABASE_URL``, ``GARRISON_ENV`` ...). Structured sections (roles, actions,
routes, rate limits) come only from ``garrison.toml``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from garrison.config.defs import (
    ActionDef,
    ExternalIdpDef,
    FrozenModel,
    OidcProviderDef,
    RateLimitDef,
    RoleDef,
    RouteDef,
)
from garrison.paths import AmbiguousPath, route_prefix

__all__ = [
    "RESERVED_PATHS",
    "SECRET_SETTINGS",
    "ActionDef",
    "Env",
    "ExternalIdpDef",
    "OidcProviderDef",
    "RateLimitDef",
    "RoleDef",
    "RouteDef",
    "Settings",
    "SigningAlg",
]

Env = Literal["development", "production"]
#: PS256 (RSA-3072) by default; RS256 (PKCS#1 v1.5, ASVS 5.0 Appendix C: disallowed) is opt-in legacy.
SigningAlg = Literal["PS256", "ES256", "EdDSA", "RS256"]

#: Settings that hold secrets: checked for strength in production, printed by `secrets generate`.
SECRET_SETTINGS: tuple[str, ...] = (
    "GARRISON_KEYRING_KEY",
    "SECRET_ENCRYPTION_KEY",
    "GARRISON_SESSION_SECRET",
    "GARRISON_AUDIT_KEY",
)
#: Secret settings that may be unset (each has a documented fallback) but, when set, are checked
#: like the others; `secrets generate` prints them too. Unset, backups are encrypted under a key
#: derived from SECRET_ENCRYPTION_KEY, so they would not survive a rotation of the vault key.
OPTIONAL_SECRET_SETTINGS: tuple[str, ...] = ("GARRISON_BACKUP_KEY",)
#: Every secret `garrison secrets generate` prints.
GENERATED_SECRETS: tuple[str, ...] = SECRET_SETTINGS + OPTIONAL_SECRET_SETTINGS


_DURATION = re.compile(r"^(\d+)([smhdw]?)$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def duration_seconds(text: str) -> int | None:
    """``90d`` (or ``12h``, ``3600``) -> seconds; None for anything else, or zero."""
    match = _DURATION.match(text.strip())
    if not match:
        return None
    seconds = int(match.group(1)) * _UNITS[match.group(2)]
    return seconds or None


#: Garrison's own path namespaces. A proxied route may not cover one (nor sit inside one): the
#: built-in proxy runs before Garrison's routes, so ``prefix = "/"`` would hand /auth/login to an
#: upstream. A test checks every route the app serves starts with one of these.
RESERVED_PATHS: tuple[str, ...] = (
    "/auth",
    "/admin",
    "/.well-known",
    "/healthz",
    "/readyz",
    "/metrics",
    "/verify",
    "/v1/decide",
    "/v1/secrets",
    "/openapi.json",
    "/docs",
    "/console",
    "/",  # exactly the root (the redirect to the console); refuses only ``prefix = "/"``
)


def _overlaps(prefix: str, reserved: str, *, case_insensitive: bool = False) -> bool:
    """Whether a proxied prefix covers or sits in ``reserved``, read as the proxy reads it
    (canonical, ``/%61uth`` is ``/auth``; case-blind for a case-insensitive route)."""
    try:
        p = route_prefix(prefix)
    except AmbiguousPath:
        return False  # refused by the registry, with the reason
    if case_insensitive:
        p = p.lower()
    return p == reserved or reserved.startswith(p + "/") or p.startswith(reserved + "/")


class Settings(FrozenModel):
    env: Env = Field("development", alias="GARRISON_ENV")
    data_dir: Path = Field(Path(".garrison"), alias="GARRISON_DATA_DIR")
    config_path: Path | None = Field(None, alias="GARRISON_CONFIG")

    # storage
    database_url: str = Field("", alias="DATABASE_URL")
    #: the migrator's DSN (owner of the schema): `db upgrade`, `audit prune`, `backup restore`
    migrator_database_url: str = Field("", alias="GARRISON_MIGRATOR_DATABASE_URL")
    db_pool_size: int = Field(10, alias="GARRISON_DB_POOL_SIZE", ge=1, le=500)
    db_max_overflow: int = Field(10, alias="GARRISON_DB_MAX_OVERFLOW", ge=0, le=500)
    db_pool_timeout: float = Field(10.0, alias="GARRISON_DB_POOL_TIMEOUT", gt=0)
    redis_url: str = Field("", alias="REDIS_URL")
    redis_prefix: str = Field("garrison", alias="GARRISON_REDIS_PREFIX", min_length=1)
    use_redis_limiter: bool = Field(False, alias="USE_REDIS_LIMITER")
    redis_fail_open: bool = Field(False, alias="GARRISON_REDIS_FAIL_OPEN")

    # tokens
    issuer: str = Field("http://127.0.0.1:8080", alias="GARRISON_ISSUER", min_length=1)
    audience: str = Field("garrison", alias="GARRISON_AUDIENCE", min_length=1)
    access_ttl: int = Field(900, alias="GARRISON_ACCESS_TTL", ge=30, le=86400)
    refresh_ttl: int = Field(30 * 86400, alias="GARRISON_REFRESH_TTL", ge=300)
    # session lifecycle (A16, ASVS 7.3; NIST SP 800-63B AAL2): a refresh family (a Bearer or cookie
    # session) ends when unused this long, and in any case this long after its login
    session_idle_ttl: int = Field(1800, alias="GARRISON_SESSION_IDLE_TTL", ge=60)
    session_absolute_ttl: int = Field(12 * 3600, alias="GARRISON_SESSION_ABSOLUTE_TTL", ge=300)
    # password policy (A15, ASVS 6.2.1): never below 8
    password_min_length: int = Field(8, alias="GARRISON_PASSWORD_MIN_LENGTH", ge=8, le=128)
    signing_alg: SigningAlg = Field("PS256", alias="GARRISON_SIGNING_ALG")
    key_rotate_days: int = Field(90, alias="GARRISON_KEY_ROTATE_DAYS", ge=1)
    clock_skew: int = Field(30, alias="GARRISON_CLOCK_SKEW", ge=0, le=300)
    token_cache_size: int = Field(100_000, alias="GARRISON_TOKEN_CACHE_SIZE", ge=0)
    user_cache_ttl: float = Field(30.0, alias="GARRISON_USER_CACHE_TTL", ge=0)
    #: lifetime of an API key made without ``--expires-in`` (A7, C5): ``90d``, ``12h``, seconds
    api_key_ttl: int = Field(90 * 86400, alias="GARRISON_API_KEY_TTL", gt=0)

    # secrets (SECRET_SETTINGS)
    keyring_key: SecretStr | None = Field(None, alias="GARRISON_KEYRING_KEY")
    secret_encryption_key: SecretStr | None = Field(None, alias="SECRET_ENCRYPTION_KEY")
    session_secret: SecretStr | None = Field(None, alias="GARRISON_SESSION_SECRET")
    #: keys the audit hash chain (HMAC) and its head file; never stored in the database (L7)
    audit_key: SecretStr | None = Field(None, alias="GARRISON_AUDIT_KEY")
    #: passwords `garrison db roles` gives the three database roles (T4); unset: left alone
    db_migrator_password: SecretStr | None = Field(None, alias="GARRISON_DB_MIGRATOR_PASSWORD")
    db_app_rw_password: SecretStr | None = Field(None, alias="GARRISON_DB_APP_RW_PASSWORD")
    db_app_ro_password: SecretStr | None = Field(None, alias="GARRISON_DB_APP_RO_PASSWORD")

    # browser sessions and OIDC (A9, A11)
    session_samesite: Literal["lax", "strict"] = Field("lax", alias="GARRISON_SESSION_SAMESITE")
    oidc_state_ttl: int = Field(600, alias="GARRISON_OIDC_STATE_TTL", ge=30, le=3600)
    oidc_max_per_ip: int = Field(30, alias="GARRISON_OIDC_MAX_PER_IP", ge=1)
    oidc_window: int = Field(60, alias="GARRISON_OIDC_WINDOW", ge=1)
    jwks_cache_ttl: int = Field(3600, alias="GARRISON_JWKS_CACHE_TTL", ge=10)
    jwks_refetch_interval: int = Field(30, alias="GARRISON_JWKS_REFETCH_INTERVAL", ge=1)

    # Supabase GoTrue shortcut for an external IdP (A10; seed 001's names)
    supabase_jwt_secret: SecretStr | None = Field(None, alias="SUPABASE_JWT_SECRET")
    supabase_jwt_aud: str = Field("authenticated", alias="SUPABASE_JWT_AUD")
    supabase_admin_roles: str = Field("", alias="SUPABASE_ADMIN_ROLES")
    supabase_jwt_issuer: str = Field("", alias="SUPABASE_JWT_ISSUER")
    supabase_url: str = Field("", alias="SUPABASE_URL")
    #: a self-hosted GoTrue: `POST /auth/refresh` passes GoTrue refresh tokens to it (seed 001)
    supabase_gotrue_url: str = Field("", alias="SUPABASE_GOTRUE_URL")
    #: sent to GoTrue as its ``apikey`` header, when set
    supabase_anon_key: SecretStr | None = Field(None, alias="SUPABASE_ANON_KEY")
    #: seconds GoTrue may take to answer a refresh (connect and read, each)
    supabase_gotrue_timeout: float = Field(5.0, alias="SUPABASE_GOTRUE_TIMEOUT", gt=0, le=30)
    #: previous vault keys, comma-separated: still decrypt until `garrison vault rewrap` (V3)
    secret_encryption_keys_old: SecretStr | None = Field(
        None, alias="GARRISON_SECRET_ENCRYPTION_KEYS_OLD"
    )
    #: encrypts backups (O1); without it, a key derived from SECRET_ENCRYPTION_KEY
    backup_key: SecretStr | None = Field(None, alias="GARRISON_BACKUP_KEY")

    # access rules
    require_jwt_for_admin: bool | None = Field(None, alias="REQUIRE_JWT_FOR_ADMIN")
    require_tenant_header: bool | None = Field(None, alias="REQUIRE_TENANT_HEADER")
    #: admin actions need a token whose ``amr`` names a second factor (A14); on in production
    require_mfa_for_admin: bool | None = Field(None, alias="GARRISON_REQUIRE_MFA_FOR_ADMIN")
    #: the issuer an authenticator app shows beside the account (the otpauth URI's ``issuer``)
    mfa_issuer: str = Field("Garrison", alias="GARRISON_MFA_ISSUER", min_length=1, max_length=100)

    # login throttling (A13; garrison.ratelimit.failures): failures per (account, address) pair
    # before its growing backoff, per account from every address (the audited ceiling), per address
    login_max_failures: int = Field(5, alias="GARRISON_LOGIN_MAX_FAILURES", ge=1)
    login_max_failures_per_account: int = Field(
        100, alias="GARRISON_LOGIN_MAX_FAILURES_PER_ACCOUNT", ge=1
    )
    login_max_failures_per_ip: int = Field(20, alias="GARRISON_LOGIN_MAX_FAILURES_PER_IP", ge=1)
    login_failure_window: int = Field(900, alias="GARRISON_LOGIN_FAILURE_WINDOW", ge=1)
    login_backoff_base: float = Field(1.0, alias="GARRISON_LOGIN_BACKOFF_BASE", gt=0, le=86400)
    login_backoff_max: float = Field(900, alias="GARRISON_LOGIN_BACKOFF_MAX", gt=0, le=86400)
    refresh_max_per_ip: int = Field(600, alias="GARRISON_REFRESH_MAX_PER_IP", ge=1)

    # edge
    max_body_bytes: int = Field(1 << 20, alias="GARRISON_MAX_BODY_BYTES", ge=1)
    bus_max_bytes: int = Field(1 << 20, alias="BUS_MAX_BYTES", ge=1)
    enable_hsts: bool = Field(False, alias="ENABLE_HSTS")
    force_https: Literal["off", "redirect", "reject"] = Field("off", alias="GARRISON_FORCE_HTTPS")
    cors_origins: tuple[str, ...] = Field((), alias="GARRISON_CORS_ORIGINS")
    trusted_proxies: tuple[str, ...] = Field((), alias="GARRISON_TRUSTED_PROXIES")
    csp_connect_src: tuple[str, ...] = Field(("'self'",), alias="GARRISON_CSP_CONNECT_SRC")
    rate_limit_window_sec: int = Field(60, alias="GARRISON_RATE_LIMIT_WINDOW_SEC", gt=0)
    rate_limit_per_window: int = Field(6000, alias="GARRISON_RATE_LIMIT_PER_WINDOW", gt=0)

    # audit and observability
    audit_log_path: Path | None = Field(None, alias="AUDIT_LOG_PATH")
    #: the audit chain's signed head, outside the database (default: audit-head.json in the data
    #: dir); catches records cut off the end of the log (L7)
    audit_head_path: Path | None = Field(None, alias="GARRISON_AUDIT_HEAD_PATH")
    otel_endpoint: str = Field("", alias="OTEL_EXPORTER_OTLP_ENDPOINT")
    #: the ``service.name`` resource attribute of every span (the OpenTelemetry setting's name)
    otel_service_name: str = Field("garrison", alias="OTEL_SERVICE_NAME", min_length=1)
    #: the share of ``/verify`` answers that get an access line; every refusal always gets one
    verify_log_sample: float = Field(0.01, alias="GARRISON_VERIFY_LOG_SAMPLE", ge=0, le=1)
    log_level: str = Field("INFO", alias="GARRISON_LOG_LEVEL")
    metrics_public: bool = Field(False, alias="GARRISON_METRICS_PUBLIC")

    # backups (what `garrison doctor` looks at: the newest file there, and its age in days)
    backup_dir: Path | None = Field(None, alias="GARRISON_BACKUP_DIR")
    backup_warn_days: float = Field(1.0, alias="GARRISON_BACKUP_WARN_DAYS", gt=0)
    backup_fail_days: float = Field(7.0, alias="GARRISON_BACKUP_FAIL_DAYS", gt=0)

    # garrison.toml sections
    roles: dict[str, RoleDef] = Field(default_factory=dict)
    actions: dict[str, ActionDef] = Field(default_factory=dict)
    routes: tuple[RouteDef, ...] = ()
    rate_limits: dict[str, RateLimitDef] = Field(default_factory=dict)
    policy_dir: Path | None = Field(None, alias="GARRISON_POLICY_DIR")
    oidc: dict[str, OidcProviderDef] = Field(default_factory=dict)
    external_idps: dict[str, ExternalIdpDef] = Field(default_factory=dict)

    @field_validator("api_key_ttl", mode="before")
    @classmethod
    def _duration(cls, value: object) -> object:
        if isinstance(value, str):
            seconds = duration_seconds(value)
            if seconds is None:
                raise ValueError("a positive duration: a number and s, m, h, d or w (e.g. 90d)")
            return seconds
        return value

    @model_validator(mode="after")
    def _routes_leave_garrison_paths_alone(self) -> Settings:
        clashes = [
            f"routes[{i}].prefix {route.prefix!r} covers Garrison's own {reserved}"
            for i, route in enumerate(self.routes)
            if route.upstream
            for reserved in RESERVED_PATHS
            if _overlaps(route.prefix, reserved, case_insensitive=route.case_insensitive)
        ]
        if clashes:
            raise ValueError("; ".join(clashes))
        return self

    @model_validator(mode="after")
    def _login_budgets_nest(self) -> Settings:
        problems = []
        if self.login_max_failures_per_account < self.login_max_failures:
            problems.append(
                f"GARRISON_LOGIN_MAX_FAILURES_PER_ACCOUNT ({self.login_max_failures_per_account})"
                f" must be at least GARRISON_LOGIN_MAX_FAILURES ({self.login_max_failures}): "
                "below it, anyone's guesses lock the account for everybody"
            )
        if self.session_absolute_ttl < self.session_idle_ttl:
            problems.append(
                f"GARRISON_SESSION_ABSOLUTE_TTL ({self.session_absolute_ttl}) must be at least "
                f"GARRISON_SESSION_IDLE_TTL ({self.session_idle_ttl})"
            )
        if self.login_backoff_max < self.login_backoff_base:
            problems.append(
                f"GARRISON_LOGIN_BACKOFF_MAX ({self.login_backoff_max:g}) must be at least "
                f"GARRISON_LOGIN_BACKOFF_BASE ({self.login_backoff_base:g})"
            )
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @model_validator(mode="after")
    def _backup_ages_nest(self) -> Settings:
        if self.backup_fail_days < self.backup_warn_days:
            raise ValueError(
                f"GARRISON_BACKUP_FAIL_DAYS ({self.backup_fail_days:g}) must be at least "
                f"GARRISON_BACKUP_WARN_DAYS ({self.backup_warn_days:g})"
            )
        return self

    @property
    def production(self) -> bool:
        return self.env == "production"

    @property
    def jwt_required_for_admin(self) -> bool:
        if self.require_jwt_for_admin is None:
            return self.production
        return self.require_jwt_for_admin

    @property
    def mfa_required_for_admin(self) -> bool:
        if self.require_mfa_for_admin is None:
            return self.production
        return self.require_mfa_for_admin

    @property
    def tenant_header_required(self) -> bool:
        if self.require_tenant_header is None:
            return self.production
        return self.require_tenant_header

    @property
    def effective_migrator_database_url(self) -> str:
        """The migrator's DSN; without ``GARRISON_MIGRATOR_DATABASE_URL``, ``DATABASE_URL``'s."""
        return self.migrator_database_url or self.effective_database_url

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'garrison.db').resolve()}"
