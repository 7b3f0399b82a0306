"""How strong a secret is (C2): one bar for every secret setting and every secret named indirectly.

Apart from ``Settings`` so the domain (the vault's old keys, an external IdP's HS256 secret) can
judge a secret without importing the settings. The estimator is zxcvbn, with Garrison's own words
as dictionary hints, on top of a known-default list, a length rule and a cheap entropy bar.
"""

from __future__ import annotations

import functools
import math
from collections import Counter

from zxcvbn import zxcvbn

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
