"""Redaction (C6): secrets, passwords, tokens and API keys never reach logs or audit details."""

from __future__ import annotations

import re
from typing import Any

REDACTED = "[redacted]"
_SENSITIVE_KEY = re.compile(
    r"pass(word)?|secret|token|api[_-]?key|authorization|cookie|credential|private|^value$", re.I
)
# JWTs, Garrison refresh tokens and API keys, bearer headers
_SENSITIVE_VALUE = re.compile(
    r"eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*"
    r"|grt_[A-Za-z0-9_-]{16,}|gk_[A-Za-z0-9_-]{16,}|(?i:bearer)\s+\S+"
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
