"""Production refuses to start on weak or missing settings (C2, C3), naming each setting."""

from __future__ import annotations

import math
from collections import Counter
from urllib.parse import parse_qs, urlsplit

from garrison.config.settings import SECRET_SETTINGS, Settings

KNOWN_WEAK = frozenset(
    {"dev-token", "changeme", "admin/changeme", "secret", "password", "admin", "test", "default"}
)
MIN_SECRET_BYTES = 32
_SAFE_SSLMODES = {"require", "verify-ca", "verify-full"}


def _entropy_bytes(value: str) -> float:
    """Shannon estimate of a string's entropy, in bytes (a cheap bar, not a proof of strength)."""
    if not value:
        return 0.0
    counts = Counter(value)
    per_char = -sum((n / len(value)) * math.log2(n / len(value)) for n in counts.values())
    return per_char * len(value) / 8


def secret_problem(name: str, value: str | None) -> str | None:
    if not value:
        return f"{name}: missing (set {name} or {name}_FILE; `garrison secrets generate`)"
    lowered = value.strip().lower()
    if lowered in KNOWN_WEAK or any(weak in lowered for weak in ("changeme", "dev-token")):
        return f"{name}: a known default or placeholder value"
    if len(value.encode()) < MIN_SECRET_BYTES:
        return f"{name}: shorter than {MIN_SECRET_BYTES} bytes"
    if _entropy_bytes(value) < MIN_SECRET_BYTES * 0.5:
        return f"{name}: too little entropy (repetitive or predictable)"
    return None


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
    if settings.migrator_database_url:
        problem = database_problem(settings.migrator_database_url)
        if problem:
            found.append(problem.replace("DATABASE_URL", "GARRISON_MIGRATOR_DATABASE_URL", 1))
    if "*" in settings.cors_origins:
        found.append("GARRISON_CORS_ORIGINS: a wildcard origin is refused in production")
    if settings.use_redis_limiter and not settings.redis_url:
        found.append("REDIS_URL: USE_REDIS_LIMITER is on but REDIS_URL is empty")
    return found
