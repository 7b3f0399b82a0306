"""Production refuses to start on weak or missing settings (C2, C3), naming each setting."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from garrison.config.settings import SECRET_SETTINGS, Settings
from garrison.config.strength import KNOWN_WEAK, MIN_SECRET_BYTES, secret_problem

__all__ = [
    "KNOWN_WEAK",
    "MIN_SECRET_BYTES",
    "database_problem",
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


def production_problems(settings: Settings) -> list[str]:
    found: list[str] = []
    for name in SECRET_SETTINGS:
        field = next(f for f, info in Settings.model_fields.items() if info.alias == name)
        secret = getattr(settings, field)
        problem = secret_problem(name, secret.get_secret_value() if secret else None)
        if problem:
            found.append(problem)
    problem = database_problem(settings.database_url)
    if problem:
        found.append(problem)
    if "*" in settings.cors_origins:
        found.append("GARRISON_CORS_ORIGINS: a wildcard origin is refused in production")
    if settings.use_redis_limiter and not settings.redis_url:
        found.append("REDIS_URL: USE_REDIS_LIMITER is on but REDIS_URL is empty")
    return found
