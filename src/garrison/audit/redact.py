"""Redaction (C6): secrets, passwords, tokens and API keys never reach logs or audit details."""

from __future__ import annotations

import re
from typing import Any

REDACTED = "[redacted]"
_SENSITIVE_KEY = re.compile(
    r"pass(word)?|secret|token|api[_-]?key|authorization|cookie|credential|private|^value$", re.I
)
# Every secret shape Garrison makes or stores: JWTs (and any JWS/JWE compact form), refresh tokens
# (``grt_``), API keys (``gk_<lookup>_<secret>``), password hashes in PHC form (argon2id, and the
# scrypt/pbkdf2/bcrypt shapes a migrated user may carry) and bearer credentials. A hash is
# matched up to the end of its PHC string; a PostgreSQL "Failing row contains (...)" detail quotes
# it between commas, so commas inside its parameters (``m=19456,t=2,p=1``) stay part of the match.
_SENSITIVE_VALUE = re.compile(
    r"eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_.-]*"
    r"|grt_[A-Za-z0-9_-]{16,}|gk_[A-Za-z0-9_-]{16,}"
    r"|\$(?:argon2(?:id|i|d)|scrypt|pbkdf2[A-Za-z0-9-]*|2[abxy]?|7)\$[^\s'\"()\[\]{}]+"
    r"|(?i:bearer)\s+\S+"
)


def redact_text(text: str) -> str:
    return _SENSITIVE_VALUE.sub(REDACTED, text)


def redact(value: Any, key: str = "") -> Any:
    if key and _SENSITIVE_KEY.search(key):
        return REDACTED
    if isinstance(value, dict):
        return {str(k): redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    if isinstance(value, str):
        return redact_text(value)
    return value
