"""The composition root: build every service from ``Settings``. No module-level state anywhere.

``build_services`` is used by ``garrison serve`` (through ``gateway.asgi.create_app``) and by every
CLI command, so both see the same database, keyring, bus and audit log.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import redis

from garrison.audit.event import AuditSink
from garrison.audit.writer import AuditWriter
from garrison.clock import Clock, system_clock
from garrison.config import Settings
from garrison.errors import ConfigError
from garrison.identity.apikeys import ApiKeyStore
from garrison.identity.authn import Authenticator
from garrison.identity.service import AuthService, Throttle
from garrison.identity.sessions import SessionStore
from garrison.identity.users import UserStore
from garrison.keys.keyring import Keyring
from garrison.keys.sealing import derive_key, new_secret
from garrison.observability.metrics import Metrics
from garrison.ratelimit.limiter import Limiter, MemoryLimiter, RedisLimiter
from garrison.storage import migrate
from garrison.storage.bus import InvalidationBus, RedisBus
from garrison.storage.db import Database
from garrison.tokens.jwt import TokenCodec

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
    metrics: Metrics

    def close(self) -> None:
        self.db.dispose()
        if self.redis is not None:
            self.redis.close()


def data_dir(settings: Settings) -> Path:
    path = settings.data_dir
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def keyring_secret(settings: Settings) -> str:
    """``GARRISON_KEYRING_KEY``, or in development a key file made once under the data dir."""
    if settings.keyring_key is not None:
        return settings.keyring_key.get_secret_value()
    if settings.production:
        raise ConfigError(["GARRISON_KEYRING_KEY: missing"])
    path = data_dir(settings) / "keyring.key"
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(new_secret())
    return path.read_text().strip()


def open_database(settings: Settings) -> Database:
    if not settings.database_url:
        data_dir(settings)
    return Database(
        settings.effective_database_url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_timeout=settings.db_pool_timeout,
    )


def prepare_schema(settings: Settings, db: Database) -> None:
    """Development migrates on start; production refuses to run on a stale schema (O2)."""
    if settings.production:
        pending = migrate.pending_revisions(db)
        if pending:
            raise ConfigError(
                [f"DATABASE_URL: {len(pending)} pending migration(s); run `garrison db upgrade`"]
            )
    else:
        migrate.upgrade(db)


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
    audit = AuditWriter(db, clock=clock, log_path=settings.audit_log_path)
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
    users = UserStore(db, bus, clock)
    sessions = SessionStore(db, bus, ttl=settings.refresh_ttl, clock=clock)
    api_keys = ApiKeyStore(db, bus, clock)
    authenticator = Authenticator(
        codec, users, sessions, api_keys, bus, cache_ttl=settings.user_cache_ttl, clock=clock
    )
    auth = AuthService(
        users,
        sessions,
        codec,
        limiter,
        audit,
        Throttle(
            per_account=settings.login_max_failures_per_account,
            per_ip=settings.login_max_failures_per_ip,
            window=settings.login_failure_window,
            refresh_per_ip=settings.refresh_max_per_ip,
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
        metrics=Metrics(),
    )
