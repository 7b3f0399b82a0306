"""Production refuses to start on weak or missing settings (C2, C3), naming each setting.

A secret must not be a known default, must be at least 32 bytes, and must resist guessing by a
strength estimate (zxcvbn: dictionary words, keyboard walks, sequences, repeats, years, l33t): a
value of 32 characters such as ``0123456789abcdef0123456789abcdef`` or
``MySuperSecretKeyForGarrison2024!`` passes a length and character-entropy bar and is guessed all
the same. ``garrison secrets generate`` (256 random bits) is far above every bar.
"""

from __future__ import annotations

import functools
import math
from collections import Counter
from urllib.parse import parse_qs, urlsplit

from zxcvbn import zxcvbn

from garrison.config.settings import OPTIONAL_SECRET_SETTINGS, SECRET_SETTINGS, Settings

KNOWN_WEAK = frozenset(
    {"dev-token", "changeme", "admin/changeme", "secret", "password", "admin", "test", "default"}
)
MIN_SECRET_BYTES = 32
#: A secret's estimated guesses must reach 10^25 (about 83 bits). 16 random bytes as hex (128 bits)
#: estimate at 10^27 or more, a generated secret at 10^42; phrases of words land well below.
MIN_GUESSES_LOG10 = 25.0
#: The estimate looks at this many characters (zxcvbn's cost grows with the square of the length):
#: a prefix's estimate is a lower bound for the whole value, and 48 characters reach the bar with
#: room to spare unless they are predictable themselves.
_ESTIMATE_CHARS = 48
_SAFE_SSLMODES = {"require", "verify-ca", "verify-full"}


def _entropy_bytes(value: str) -> float:
    """Shannon estimate of a string's entropy, in bytes (a cheap bar, not a proof of strength)."""
    if not value:
        return 0.0
    counts = Counter(value)
    per_char = -sum((n / len(value)) * math.log2(n / len(value)) for n in counts.values())
    return per_char * len(value) / 8


@functools.lru_cache(maxsize=32)
def guesses_log10(name: str, value: str) -> float:
    """zxcvbn's estimate (log10 of guesses), with Garrison's own words as dictionary hints."""
    hints = ["garrison", *name.lower().split("_")]
    result = zxcvbn(value[:_ESTIMATE_CHARS], user_inputs=hints)
    return float(result["guesses_log10"])


def secret_problem(name: str, value: str | None) -> str | None:
    """Why ``value`` is not good enough for the secret setting ``name`` (None: it is). The reason
    names the setting and never repeats the value."""
    if not value:
        return f"{name}: missing (set {name} or {name}_FILE; `garrison secrets generate`)"
    lowered = value.strip().lower()
    if lowered in KNOWN_WEAK or any(weak in lowered for weak in ("changeme", "dev-token")):
        return f"{name}: a known default or placeholder value"
    if len(value.encode()) < MIN_SECRET_BYTES:
        return f"{name}: shorter than {MIN_SECRET_BYTES} bytes"
    if _entropy_bytes(value) < MIN_SECRET_BYTES * 0.5:
        return f"{name}: too little entropy (repetitive or predictable)"
    estimate = guesses_log10(name, value)
    if estimate < MIN_GUESSES_LOG10:
        return (
            f"{name}: predictable (words, sequences or patterns: about 10^{estimate:.0f} guesses, "
            f"needs 10^{MIN_GUESSES_LOG10:.0f}); use `garrison secrets generate`"
        )
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
    return found
