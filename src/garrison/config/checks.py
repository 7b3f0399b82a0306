"""Production refuses to start on weak or missing settings (C2, C3), naming each setting.

A secret must not be a known default, must be at least 32 bytes, and must resist guessing by a
strength estimate (zxcvbn: dictionary words, keyboard walks, sequences, repeats, years, l33t): a
value of 32 characters such as ``0123456789abcdef0123456789abcdef`` or
``MySuperSecretKeyForGarrison2024!`` passes a length and character-entropy bar and is guessed all
the same. ``garrison secrets generate`` (256 random bits) is far above every bar.
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from garrison.config.settings import OPTIONAL_SECRET_SETTINGS, SECRET_SETTINGS, Settings
from garrison.config.strength import (
    KNOWN_WEAK,
    MIN_GUESSES_LOG10,
    MIN_SECRET_BYTES,
    guesses_log10,
    secret_problem,
)
from garrison.errors import ConfigError
from garrison.storage.redis_client import redis_target

__all__ = [
    "KNOWN_WEAK",
    "MIN_GUESSES_LOG10",
    "MIN_SECRET_BYTES",
    "database_problem",
    "guesses_log10",
    "production_problems",
    "secret_problem",
]

_SAFE_SSLMODES = {"require", "verify-ca", "verify-full"}


def database_problem(url: str) -> str | None:
    if not url.strip():
        return "DATABASE_URL: missing or empty (production needs PostgreSQL)"
    parts = urlsplit(url)
    if parts.scheme.split("+")[0] in {"postgresql", "postgres"}:
        modes = parse_qs(parts.query).get("sslmode", [])
        if not modes or modes[-1] not in _SAFE_SSLMODES:
            return "DATABASE_URL: PostgreSQL DSN lacks sslmode=require|verify-ca|verify-full"
    elif parts.scheme.startswith("sqlite"):
        return "DATABASE_URL: SQLite is for development; production needs PostgreSQL"
    return None


def _field(alias: str) -> str:
    return next(f for f, info in Settings.model_fields.items() if info.alias == alias)


def production_problems(settings: Settings) -> list[str]:
    found: list[str] = []
    for name in SECRET_SETTINGS:
        secret = getattr(settings, _field(name))
        problem = secret_problem(name, secret.get_secret_value() if secret else None)
        if problem:
            found.append(problem)
    for name in OPTIONAL_SECRET_SETTINGS:  # checked when set; unset has a documented fallback
        secret = getattr(settings, _field(name))
        if secret is not None:
            problem = secret_problem(name, secret.get_secret_value())
            if problem:
                found.append(problem)
    problem = database_problem(settings.database_url)
    if problem:
        found.append(problem)
    if settings.migrator_database_url:
        problem = database_problem(settings.migrator_database_url)
        if problem:
            found.append(problem.replace("DATABASE_URL", "GARRISON_MIGRATOR_DATABASE_URL", 1))
    if "*" in settings.cors_origins:
        found.append("GARRISON_CORS_ORIGINS: a wildcard origin is refused in production")
    if settings.use_redis_limiter and not settings.redis_url:
        found.append("REDIS_URL: USE_REDIS_LIMITER is on but REDIS_URL is empty")
    if settings.redis_url:
        try:
            redis_target(settings.redis_url)
        except ConfigError as exc:
            found.extend(exc.problems)
    return found
