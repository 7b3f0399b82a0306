"""The composition root: build every service from ``Settings``. No module-level state anywhere.

``build_services`` is used by ``garrison serve`` (through ``gateway.asgi.create_app``) and by every
CLI command, so both see the same database, keyring, bus and audit log.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

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
from garrison.config import Settings
from garrison.errors import ConfigError
from garrison.identity.apikeys import ApiKeyStore
from garrison.identity.authn import Authenticator
from garrison.identity.cookies import SessionCookies
from garrison.identity.external import build_external_tokens
from garrison.identity.jwks import FETCH_TIMEOUT
from garrison.identity.oidc import OidcLogin, build_oidc_login
from garrison.identity.password_policy import PasswordPolicy
from garrison.identity.provisioning import Provisioner
from garrison.identity.service import AuthService, Throttle
from garrison.identity.sessions import SessionStore
from garrison.identity.users import UserStore
from garrison.keys.keyring import Keyring
from garrison.keys.sealing import derive_key, new_secret
from garrison.observability.metrics import Metrics
from garrison.observability.tracing import Tracing
from garrison.policy import Authorizer
from garrison.ratelimit.failures import (
    FailurePolicy,
    FailureThrottle,
    MemoryFailureStore,
    RedisFailureStore,
)
from garrison.ratelimit.guard import RateGuard
from garrison.ratelimit.lease import LeasedLimiter, LocalLimiter, RequestLimiter
from garrison.ratelimit.limiter import Limiter, MemoryLimiter, RedisLimiter
from garrison.ratelimit.rules import RateRules
from garrison.storage import migrate
from garrison.storage.bus import InvalidationBus, RedisBus
from garrison.storage.db import Database
from garrison.storage.files import private_dir
from garrison.tenancy.dbroles import runtime_role_problems
from garrison.tokens.jwt import TokenCodec
from garrison.usecases import AdminActions
from garrison.vault import KeySet, Vault

log = logging.getLogger("garrison")


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
        self.db.dispose()
        self.bus.close()
        if self.redis is not None:
            self.redis.close()


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
    return applied


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
    settings: Settings, *, clock: Clock = system_clock, migrate_schema: bool = True
) -> Services:
    db = open_database(settings)
    if migrate_schema:
        prepare_schema(settings, db)
    client: redis.Redis | None = None
    bus: InvalidationBus = InvalidationBus()
    if settings.redis_url:
        client = redis.Redis.from_url(
            settings.redis_url, socket_timeout=2, socket_connect_timeout=2
        )
        bus = RedisBus(settings.redis_url, settings.redis_prefix)
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
    users = UserStore(db, bus, clock, PasswordPolicy(settings.password_min_length))
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
        audit=audit,
    )
    authorizer = Authorizer.from_settings(settings)
    auth = AuthService(
        users,
        sessions,
        codec,
        limiter,
        audit,
        Throttle(
            login=FailureThrottle(
                RedisFailureStore(client, settings.redis_prefix)
                if isinstance(limiter, RedisLimiter) and client is not None
                else MemoryFailureStore(),
                FailurePolicy.login(settings),
                scope="login",
                clock=clock,
            ),
            refresh_per_ip=settings.refresh_max_per_ip,
            window=settings.login_failure_window,
        ),
        permissions_for=authorizer.permissions_for,
    )
    idp_http = httpx.Client(timeout=FETCH_TIMEOUT, follow_redirects=False)  # IdP traffic only
    provisioner = Provisioner(db, users, clock)
    authenticator.external = build_external_tokens(
        settings, idp_http, provisioner, lambda: keyring.verifiers, clock=clock
    )
    oidc = build_oidc_login(
        settings, idp_http, client, provisioner, auth, limiter, audit, clock=clock
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
        vault=Vault(db, KeySet.from_settings(settings, vault_secret(settings)), clock),
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
        tracing=Tracing.otlp(settings.otel_endpoint) if settings.otel_endpoint else None,
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
        RateRules(settings),
        fail_open=settings.redis_fail_open,
        on_limited=metrics.rate_limited,
        on_error=metrics.limiter_errors.inc,
    )
