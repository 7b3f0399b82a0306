"""How strong a secret is (C2): one bar for every secret setting and every secret named indirectly.

Apart from ``Settings`` so the domain (the vault's old keys, an external IdP's HS256 secret) can
judge a secret without importing the settings.
"""

from __future__ import annotations

import math
from collections import Counter

KNOWN_WEAK = frozenset(
    {"dev-token", "changeme", "admin/changeme", "secret", "password", "admin", "test", "default"}
)
MIN_SECRET_BYTES = 32


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
