"""The composition root: build every service from ``Settings``. No module-level state anywhere.

``build_services`` is used by ``garrison serve`` (through ``gateway.asgi.create_app``) and by every
CLI command, so both see the same database, keyring, bus and audit log.

Each feature gets its own frozen configuration (``PolicyConfig``, ``RateLimitConfig``,
``OidcConfig`` ...), built here once from the settings by the ``*_config`` functions at the end of
this module; no domain package reads ``Settings`` or the environment (import-linter, and
``tests/unit/ci/test_domain_environ.py``). Secrets the settings only name (an OIDC
``client_secret_env``, an IdP's ``hs256_secret_env``) are read here, from ``environ``.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

import httpx
import redis
from pydantic import SecretStr

from garrison.admission import AdmissionConfig, Pipeline
from garrison.audit.chain import ChainKey
from garrison.audit.epochs import KEYED_REVISION, mark_keyed_start
from garrison.audit.event import AuditSink
from garrison.audit.head import AuditSeal, HeadFile
from garrison.audit.writer import AuditWriter
from garrison.clock import Clock, system_clock
from garrison.config import Settings, env_secret
from garrison.config.defs import ExternalIdpDef
from garrison.errors import ConfigError
from garrison.identity.apikeys import ApiKeyStore
from garrison.identity.authn import Authenticator
from garrison.identity.cookies import SessionCookies
from garrison.identity.external import SUPABASE, ExternalIdpConfig, build_external_tokens
from garrison.identity.gotrue import GoTrueConfig, build_gotrue_refresh
from garrison.identity.jwks import FETCH_TIMEOUT
from garrison.identity.mfa import MfaStore
from garrison.identity.oidc import Limits, OidcConfig, OidcLogin, build_oidc_login
from garrison.identity.password_policy import PasswordPolicy
from garrison.identity.provisioning import Provisioner
from garrison.identity.second_factor import SecondFactor
from garrison.identity.service import AuthService, Throttle
from garrison.identity.sessions import SessionStore
from garrison.identity.users import UserStore
from garrison.keys.keyring import Keyring
from garrison.keys.sealing import derive_key, new_secret
from garrison.observability.metrics import Metrics
from garrison.observability.tracing import Tracing
from garrison.policy import Authorizer, PolicyConfig
from garrison.policy.engine import DEFAULTS_DIR
from garrison.policy.registry import registry_for
from garrison.policy.tables import TestReport, run_policy_tests
from garrison.ratelimit.failures import (
    FailurePolicy,
    FailureThrottle,
    MemoryFailureStore,
    RedisFailureStore,
)
from garrison.ratelimit.guard import RateGuard
from garrison.ratelimit.lease import LeasedLimiter, LocalLimiter, RequestLimiter
from garrison.ratelimit.limiter import Limiter, MemoryLimiter, RedisLimiter
from garrison.ratelimit.rules import RateLimitConfig, RateRules
from garrison.storage import migrate, redis_client
from garrison.storage.bus import InvalidationBus, RedisBus
from garrison.storage.db import Database
from garrison.storage.files import private_dir
from garrison.storage.redis_client import redis_target
from garrison.tenancy.dbroles import runtime_role_problems
from garrison.tokens.jwt import TokenCodec
from garrison.usecases import AdminActions
from garrison.vault import KeySet, Vault, VaultConfig
from garrison.vault.emails import EmailCipher
from garrison.vault.keys import split_old_keys

log = logging.getLogger("garrison")
_V = TypeVar("_V")


@dataclass
class Services:
    settings: Settings
    clock: Clock
    db: Database
    bus: InvalidationBus
    redis: redis.Redis | None
    limiter: Limiter
    audit: AuditSink
    keyring: Keyring
    codec: TokenCodec
    users: UserStore
    sessions: SessionStore
    api_keys: ApiKeyStore
    authenticator: Authenticator
    auth: AuthService
    authorizer: Authorizer
    vault: Vault
    metrics: Metrics
    cookies: SessionCookies  # browser sessions and CSRF (A9)
    audit_seal: AuditSeal  # the audit chain's key and head file, outside the database (L7)
    oidc: OidcLogin  # OIDC login (A11)
    guard: RateGuard  # every rate limit of every path (E3)
    admission: Pipeline  # the one admission pipeline: every request passes it (Z2, Z3)
    admin: AdminActions  # every administrative action, for the CLI and HTTP alike
    tracing: Tracing | None = None  # OTEL_EXPORTER_OTLP_ENDPOINT set (L9)

    def close(self) -> None:
        self.oidc.close()
        if self.auth.gotrue is not None:
            self.auth.gotrue.close()
        self.db.dispose()
        self.bus.close()
        if self.redis is not None:
            redis_client.close(self.redis)


def data_dir(settings: Settings) -> Path:
    return private_dir(settings.data_dir)


def keyring_secret(settings: Settings) -> str:
    """``GARRISON_KEYRING_KEY``, or in development a key file made once under the data dir."""
    return configured_secret(settings, settings.keyring_key, "GARRISON_KEYRING_KEY", "keyring.key")


def configured_secret(
    settings: Settings, value: SecretStr | None, setting: str, dev_file: str
) -> str:
    """A secret setting's value, or in development a key file made once under the data dir."""
    if value is not None:
        return value.get_secret_value()
    if settings.production:
        raise ConfigError([f"{setting}: missing"])
    path = data_dir(settings) / dev_file
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(new_secret())
    return path.read_text().strip()


def vault_secret(settings: Settings) -> str:
    """``SECRET_ENCRYPTION_KEY`` (V1), or in development a key file under the data dir."""
    return configured_secret(
        settings, settings.secret_encryption_key, "SECRET_ENCRYPTION_KEY", "vault.key"
    )


def session_secret(settings: Settings) -> str:
    """``GARRISON_SESSION_SECRET`` (CSRF tokens, A9), or in development a key file."""
    return configured_secret(
        settings, settings.session_secret, "GARRISON_SESSION_SECRET", "session.key"
    )


def audit_seal(settings: Settings) -> AuditSeal:
    """``GARRISON_AUDIT_KEY`` (or in development a key file) and the audit head file (L7)."""
    secret = configured_secret(settings, settings.audit_key, "GARRISON_AUDIT_KEY", "audit.key")
    key = ChainKey(derive_key(secret, b"audit-chain"))
    path = settings.audit_head_path or data_dir(settings) / "audit-head.json"
    return AuditSeal(key, HeadFile(path, key))


def upgrade_schema(
    settings: Settings, db: Database, progress: Callable[[str], None] | None = None
) -> list[str]:
    """Apply pending migrations (O2); the one that keys the audit chain marks where it starts."""
    applied = migrate.upgrade(db, progress)
    if KEYED_REVISION in applied:
        mark_keyed_start(db, audit_seal(settings).key, time.time())
    seal_stored_emails(settings, db, progress)
    return applied


def seal_stored_emails(
    settings: Settings, db: Database, progress: Callable[[str], None] | None = None
) -> int:
    """The data step of revision 0005 (V2): encrypt every email still stored in plaintext, in
    batches, under the vault's key (which a migration never sees). Idempotent; 0 when none."""
    store = UserStore(db, InvalidationBus())
    if not store.has_plaintext_emails():
        return 0
    store.emails = EmailCipher(KeySet.from_config(vault_config(settings)))
    if progress:
        progress("0005 data: encrypting stored emails")
    return store.seal_plaintext_emails()


def open_database(settings: Settings) -> Database:
    if not settings.database_url:
        data_dir(settings)
    return Database(
        settings.effective_database_url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_timeout=settings.db_pool_timeout,
    )


def open_migrator_database(settings: Settings) -> Database:
    """The schema owner's connection (``GARRISON_MIGRATOR_DATABASE_URL``, else ``DATABASE_URL``)."""
    if not settings.migrator_database_url:
        return open_database(settings)
    return Database(settings.migrator_database_url, pool_size=2, max_overflow=2)


def prepare_schema(settings: Settings, db: Database) -> None:
    """Development migrates on start; production refuses to run on a stale schema (O2), or as a
    database role that row-level security does not bind (T4)."""
    if settings.production:
        problems = runtime_role_problems(db)
        pending = migrate.pending_revisions(db)
        if pending:
            problems.append(
                f"DATABASE_URL: {len(pending)} pending migration(s); run `garrison db upgrade`"
            )
        if problems:
            raise ConfigError(problems)
    else:
        upgrade_schema(settings, db)


def build_services(
    settings: Settings,
    *,
    clock: Clock = system_clock,
    migrate_schema: bool = True,
    environ: Mapping[str, str] | None = None,
) -> Services:
    """Every service; ``environ`` (default: the process environment) holds the secrets the
    settings name indirectly."""
    env = os.environ if environ is None else environ
    db = open_database(settings)
    if migrate_schema:
        prepare_schema(settings, db)
    client: redis.Redis | None = None
    bus: InvalidationBus = InvalidationBus()
    if settings.redis_url:
        target = redis_target(settings.redis_url)  # ConfigError naming REDIS_URL
        client = target.client()
        bus = RedisBus(target, settings.redis_prefix, client)  # one client, one pool
    limiter: Limiter = (
        RedisLimiter(client, settings.redis_prefix)
        if settings.use_redis_limiter and client is not None
        else MemoryLimiter(clock)
    )
    metrics = Metrics()
    seal = audit_seal(settings)
    audit = AuditWriter(
        db,
        seal,
        clock=clock,
        log_path=settings.audit_log_path,
        on_backlog=metrics.set_audit_backlog,
        on_written=metrics.audited,
    )
    keyring = Keyring(
        db,
        derive_key(keyring_secret(settings), b"keyring"),
        alg=settings.signing_alg,
        verify_window=settings.access_ttl + settings.clock_skew,
        rotate_days=settings.key_rotate_days,
        clock=clock,
    )
    codec = TokenCodec(
        keyring,
        issuer=settings.issuer,
        audience=settings.audience,
        ttl=settings.access_ttl,
        clock_skew=settings.clock_skew,
        cache_size=settings.token_cache_size,
        clock=clock,
    )
    vault_keys = KeySet.from_config(vault_config(settings))
    users = UserStore(  # email sealed (V2); one password policy wherever one is set (A15)
        db, bus, clock, PasswordPolicy(settings.password_min_length), emails=EmailCipher(vault_keys)
    )
    sessions = SessionStore(
        db,
        bus,
        ttl=settings.refresh_ttl,
        clock=clock,
        idle_ttl=settings.session_idle_ttl,
        absolute_ttl=settings.session_absolute_ttl,
    )
    api_keys = ApiKeyStore(db, bus, clock, default_ttl=settings.api_key_ttl)
    authenticator = Authenticator(
        codec,
        users,
        sessions,
        api_keys,
        bus,
        cache_ttl=settings.user_cache_ttl,
        clock=clock,
    )
    authorizer = Authorizer.from_config(policy_config(settings))
    failures = (
        RedisFailureStore(client, settings.redis_prefix)
        if isinstance(limiter, RedisLimiter) and client is not None
        else MemoryFailureStore()
    )
    mfa = SecondFactor(  # A14: codes throttled like passwords, under their own scope
        MfaStore(db, vault_keys, clock),
        FailureThrottle(failures, login_failure_policy(settings), scope="mfa", clock=clock),
        audit,
        issuer=settings.mfa_issuer,
    )
    auth = AuthService(
        users,
        sessions,
        codec,
        limiter,
        audit,
        Throttle(
            login=FailureThrottle(
                failures,
                login_failure_policy(settings),
                scope="login",
                clock=clock,
            ),
            refresh_per_ip=settings.refresh_max_per_ip,
            window=settings.login_failure_window,
        ),
        permissions_for=authorizer.permissions_for,
        mfa=mfa,
    )
    idp_http = httpx.Client(timeout=FETCH_TIMEOUT, follow_redirects=False)  # IdP traffic only
    provisioner = Provisioner(db, users, clock)
    authenticator.external = build_external_tokens(
        external_idp_config(settings, env),
        idp_http,
        provisioner,
        lambda: keyring.verifiers,
        clock=clock,
    )
    auth.gotrue = build_gotrue_refresh(  # SUPABASE_GOTRUE_URL (seed 001)
        gotrue_config(settings), lambda token: authenticator.authenticate(f"Bearer {token}")
    )
    oidc = build_oidc_login(
        oidc_config(settings, env), idp_http, client, provisioner, auth, limiter, audit, clock=clock
    )
    cookies = SessionCookies(
        derive_key(session_secret(settings), b"csrf"), settings.session_samesite
    )
    guard = build_rate_guard(settings, limiter, metrics, clock)
    admission = Pipeline(
        authenticator=authenticator,
        authorizer=authorizer,
        guard=guard,
        audit=audit,
        metrics=metrics,
        cookies=cookies,
        bus=bus,
        clock=clock,
        config=AdmissionConfig(
            tenant_header_required=settings.tenant_header_required,
            remember_ttl=settings.user_cache_ttl,
        ),
    )
    return Services(
        settings=settings,
        clock=clock,
        db=db,
        bus=bus,
        redis=client,
        limiter=limiter,
        audit=audit,
        keyring=keyring,
        codec=codec,
        users=users,
        sessions=sessions,
        api_keys=api_keys,
        authenticator=authenticator,
        auth=auth,
        authorizer=authorizer,
        vault=Vault(db, vault_keys, clock),
        metrics=metrics,
        cookies=cookies,
        oidc=oidc,
        guard=guard,
        admission=admission,
        admin=AdminActions(
            pipeline=admission,
            users=users,
            api_keys=api_keys,
            keyring=keyring,
            audit=audit,
            known_roles=lambda: frozenset(authorizer.registry.roles),
        ),
        audit_seal=seal,
        tracing=(
            Tracing.otlp(settings.otel_endpoint, settings.otel_service_name)
            if settings.otel_endpoint
            else None
        ),
    )


def build_rate_guard(
    settings: Settings, limiter: Limiter, metrics: Metrics, clock: Clock
) -> RateGuard:
    """The limits of every path: leased batches over Redis, direct counting in memory."""
    spender: RequestLimiter = (
        LeasedLimiter(limiter, clock=clock)
        if isinstance(limiter, RedisLimiter)
        else LocalLimiter(limiter)
    )
    return RateGuard(
        spender,
        RateRules(rate_limit_config(settings)),
        fail_open=settings.redis_fail_open,
        on_limited=metrics.rate_limited,
        on_error=metrics.limiter_errors.inc,
    )


# -- each feature's configuration, read from the settings here and only here --------------------
def _frozen(mapping: Mapping[str, _V]) -> Mapping[str, _V]:
    """A read-only copy: a feature's config cannot be changed after it is built."""
    return MappingProxyType(dict(mapping))


def policy_config(settings: Settings) -> PolicyConfig:
    """The action registry ``garrison.toml`` declares, ``GARRISON_POLICY_DIR`` (relative to the
    config file's folder; unset: the packaged set) and ``REQUIRE_JWT_FOR_ADMIN``."""
    path = settings.policy_dir
    if path is None:
        path = DEFAULTS_DIR
    elif not path.is_absolute() and settings.config_path is not None:
        path = settings.config_path.parent / path
    return PolicyConfig(
        policy_dir=path,
        roles=_frozen(settings.roles),
        actions=_frozen(settings.actions),
        routes=settings.routes,
        jwt_required_for_admin=settings.jwt_required_for_admin,
        mfa_required_for_admin=settings.mfa_required_for_admin,
    )


def configured_policy_tests(settings: Settings) -> TestReport:
    """``garrison policy test`` without a PATH, and the console's policies page: the configured
    policy set (its registry and ``GARRISON_POLICY_DIR``) validated, its decision tables run."""
    config = policy_config(settings)
    return run_policy_tests(registry_for(config), config.policy_dir)


def vault_status(svc: Services) -> dict[str, Any]:
    """``garrison vault status`` and the console's vault page (V3): rows per KEK version of the
    vault's secrets, the users' sealed emails and the TOTP seeds, and which versions are
    configured and current."""
    counts = svc.vault.versions()
    emails = svc.users.email_versions()
    seeds = svc.auth.mfa.store.versions() if svc.auth.mfa is not None else {}
    keys = svc.vault.keys
    rows = [
        {
            "key_version": v,
            "secrets": counts.get(v, 0),
            "emails": emails.get(v, 0),
            "mfa_seeds": seeds.get(v, 0),  # TOTP seeds sealed under the same keys (A14)
            "current": v == keys.current,
            "configured": keys.knows(v),
        }
        for v in sorted(set(counts) | set(emails) | set(seeds))
    ]
    return {"current_version": keys.current, "versions": rows}


def rate_limit_config(settings: Settings) -> RateLimitConfig:
    """``[rate_limits]`` and ``GARRISON_RATE_LIMIT_WINDOW_SEC`` / ``_PER_WINDOW`` (E3)."""
    return RateLimitConfig(
        groups=_frozen(settings.rate_limits),
        window=settings.rate_limit_window_sec,
        per_window=settings.rate_limit_per_window,
    )


def login_failure_policy(settings: Settings) -> FailurePolicy:
    """The ``GARRISON_LOGIN_*`` budgets of the login throttle (A13)."""
    return FailurePolicy(
        per_pair=settings.login_max_failures,
        per_account=settings.login_max_failures_per_account,
        per_ip=settings.login_max_failures_per_ip,
        window=settings.login_failure_window,
        backoff_base=settings.login_backoff_base,
        backoff_max=settings.login_backoff_max,
    )


def vault_config(settings: Settings) -> VaultConfig:
    """``SECRET_ENCRYPTION_KEY`` (``vault_secret``) and the previous keys (V1, V3)."""
    old = settings.secret_encryption_keys_old
    return VaultConfig(
        current_key=vault_secret(settings),
        old_keys=tuple(split_old_keys(old.get_secret_value() if old else None)),
        production=settings.production,
    )


def oidc_config(settings: Settings, environ: Mapping[str, str]) -> OidcConfig:
    """``[oidc.<name>]`` with each ``client_secret_env`` read from ``environ`` (or its ``_FILE``),
    and the ``GARRISON_OIDC_*`` limits (A11)."""
    secrets = {
        d.client_secret_env: value
        for d in settings.oidc.values()
        if d.client_secret_env and (value := env_secret(d.client_secret_env, environ)) is not None
    }
    return OidcConfig(
        issuer=settings.issuer,
        providers=_frozen(settings.oidc),
        client_secrets=_frozen(secrets),
        redis_prefix=settings.redis_prefix,
        limits=Limits(
            state_ttl=settings.oidc_state_ttl,
            max_per_ip=settings.oidc_max_per_ip,
            window=settings.oidc_window,
            jwks_ttl=settings.jwks_cache_ttl,
            jwks_refetch=settings.jwks_refetch_interval,
            clock_skew=settings.clock_skew,
        ),
    )


def supabase_def(settings: Settings) -> ExternalIdpDef | None:
    """The ``SUPABASE_JWT_*`` shortcut of seed 001 as an IdP definition (None when unset)."""
    if settings.supabase_jwt_secret is None:
        return None
    issuer = settings.supabase_jwt_issuer or (
        settings.supabase_url.rstrip("/") + "/auth/v1" if settings.supabase_url else ""
    )
    admin = tuple(r.strip() for r in settings.supabase_admin_roles.split(",") if r.strip())
    return ExternalIdpDef(
        issuer=issuer,
        audience=settings.supabase_jwt_aud,
        hs256_secret_env="SUPABASE_JWT_SECRET",  # noqa: S106 - the variable name, not a value
        role_claim="role",
        admin_roles=admin,
        role_map={"authenticated": "user"},
        default_roles=(),
    )


def external_idp_config(settings: Settings, environ: Mapping[str, str]) -> ExternalIdpConfig:
    """``[external_idps]`` plus the Supabase shortcut, each ``hs256_secret_env`` read from
    ``environ`` (or its ``_FILE``; ``SUPABASE_JWT_SECRET`` falls back to the setting) (A10)."""
    env = dict(environ)
    idps = dict(settings.external_idps)
    shortcut = supabase_def(settings)
    if shortcut is not None:
        idps.setdefault(SUPABASE, shortcut)
        assert settings.supabase_jwt_secret is not None
        env.setdefault("SUPABASE_JWT_SECRET", settings.supabase_jwt_secret.get_secret_value())
    secrets = {
        d.hs256_secret_env: value
        for d in idps.values()
        if d.hs256_secret_env and (value := env_secret(d.hs256_secret_env, env)) is not None
    }
    return ExternalIdpConfig(
        own_issuer=settings.issuer,
        idps=_frozen(idps),
        secrets=_frozen(secrets),
        jwks_ttl=settings.jwks_cache_ttl,
        jwks_refetch=settings.jwks_refetch_interval,
        clock_skew=settings.clock_skew,
        production=settings.production,
    )


def gotrue_config(settings: Settings) -> GoTrueConfig:
    anon = settings.supabase_anon_key
    return GoTrueConfig(
        url=settings.supabase_gotrue_url,
        jwt_secret_set=settings.supabase_jwt_secret is not None,
        production=settings.production,
        anon_key=anon.get_secret_value() if anon else None,
        timeout=settings.supabase_gotrue_timeout,
    )
