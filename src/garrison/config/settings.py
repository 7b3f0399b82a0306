"""The frozen, validated settings every part of Garrison reads.

Settings are built once at start-up (``garrison.config.load_settings``) and never read again from
the environment; a bad value fails the start, not a request. Field aliases are the public setting
names of API.md (``DATABASE_URL``, ``GARRISON_ENV`` ...). Structured sections (roles, actions,
routes, rate limits) come only from ``garrison.toml``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from garrison.paths import AmbiguousPath, route_prefix

Env = Literal["development", "production"]
SigningAlg = Literal["RS256", "ES256", "EdDSA"]

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


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class RoleDef(_Frozen):
    """A role; ``includes`` names the roles whose permissions it inherits."""

    includes: tuple[str, ...] = ()
    description: str = ""


class ActionDef(_Frozen):
    """A registered action (Z2): a handler name (``ticket.close``) or a proxied route."""

    requires_auth: bool = True
    required_roles: tuple[str, ...] = ()
    required_params: tuple[str, ...] = ()
    own_resources_only: bool = False
    #: roles that may act on anyone's resources although the action is own-resources-only
    owner_exempt_roles: tuple[str, ...] = ()
    #: platform-wide (metrics, audit verify, key rotation): a tenant-bound identity, or any
    #: identity acting in a tenant, is refused
    platform_only: bool = False
    #: about the caller itself (who am I, log out, ask about myself): any credential may, an API
    #: key whatever its scopes
    self_service: bool = False
    description: str = ""


class RouteDef(_Frozen):
    """A route of the action registry / built-in proxy: path prefix -> action (and upstream)."""

    prefix: str
    action: str
    methods: tuple[str, ...] = ()
    upstream: str | None = None
    max_body_bytes: int | None = Field(None, ge=1)
    rate_limit_group: str | None = None
    required_roles: tuple[str, ...] = ()  # any one of them (checked besides the policy)
    strip_prefix: bool = False  # proxy: send ``/api/x`` as ``/x`` to the upstream
    #: match the prefix ignoring letter case, for a backend that does (``/API/x`` is ``/api/x``);
    #: otherwise a path that matches only so is refused (``gateway.paths``)
    case_insensitive: bool = False

    @field_validator("methods")
    @classmethod
    def _upper_case_methods(cls, methods: tuple[str, ...]) -> tuple[str, ...]:
        """Requests are matched by their upper-case method: ``get`` would never match."""
        return tuple(m.upper() for m in methods)


class RateLimitDef(_Frozen):
    """A route group's limit: ``rate_limit_per_window`` hits per ``rate_limit_window_sec``."""

    rate_limit_window_sec: int = Field(60, gt=0)
    rate_limit_per_window: int = Field(600, gt=0)
    key: Literal["identity", "ip", "api_key", "tenant"] = "identity"
    prefixes: tuple[str, ...] = ()


class OidcProviderDef(_Frozen):
    """An OIDC provider for browser login (A11). The client secret is read from the environment
    variable ``client_secret_env`` (or its ``_FILE``); none means a public client (PKCE only)."""

    issuer: str
    client_id: str
    client_secret_env: str = ""
    scopes: tuple[str, ...] = ("openid", "email")
    redirect_uri: str = ""  # default: {GARRISON_ISSUER}/auth/oidc/{name}/callback
    post_login_url: str = "/"  # where the browser goes once the session cookie is set
    default_roles: tuple[str, ...] = ("user",)  # roles of a JIT-provisioned user


class ExternalIdpDef(_Frozen):
    """An external IdP whose tokens are accepted (A10): HS256 secret or a JWKS URL."""

    issuer: str = ""
    audience: str = ""
    hs256_secret_env: str = ""
    jwks_url: str = ""
    role_claim: str = "role"  # a dotted path (``app_metadata.roles``); a string or a list
    admin_roles: tuple[str, ...] = ()
    role_map: dict[str, str] = Field(default_factory=dict)
    default_roles: tuple[str, ...] = ("user",)  # always granted to a verified identity
    tenant_claim: str = ""  # claim naming the tenant; empty: platform-scoped identities


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


class Settings(_Frozen):
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
    signing_alg: SigningAlg = Field("RS256", alias="GARRISON_SIGNING_ALG")
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
    #: previous vault keys, comma-separated: still decrypt until `garrison vault rewrap` (V3)
    secret_encryption_keys_old: SecretStr | None = Field(
        None, alias="GARRISON_SECRET_ENCRYPTION_KEYS_OLD"
    )
    #: encrypts backups (O1); without it, a key derived from SECRET_ENCRYPTION_KEY
    backup_key: SecretStr | None = Field(None, alias="GARRISON_BACKUP_KEY")

    # access rules
    require_jwt_for_admin: bool | None = Field(None, alias="REQUIRE_JWT_FOR_ADMIN")
    require_tenant_header: bool | None = Field(None, alias="REQUIRE_TENANT_HEADER")

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
    log_level: str = Field("INFO", alias="GARRISON_LOG_LEVEL")
    metrics_public: bool = Field(False, alias="GARRISON_METRICS_PUBLIC")

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
        if self.login_backoff_max < self.login_backoff_base:
            problems.append(
                f"GARRISON_LOGIN_BACKOFF_MAX ({self.login_backoff_max:g}) must be at least "
                f"GARRISON_LOGIN_BACKOFF_BASE ({self.login_backoff_base:g})"
            )
        if problems:
            raise ValueError("; ".join(problems))
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
