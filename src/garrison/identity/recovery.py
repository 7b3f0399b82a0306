"""One-time recovery codes (A14; ASVS 6.5.1-6.5.4): made, shown once, stored as keyed hashes.

Ten codes, each 120 random bits from ``secrets`` written as 24 base32 letters in groups of four
(``abcd-efgh-ijkl-mnop-qrst-uvwx``). What is stored is HMAC-SHA256 under a random per-code salt,
not argon2: ASVS 6.5.2 asks for a salted password hash only below 112 bits of entropy, because a
code that strong cannot be found by guessing its hash, and a login trying a code against up to ten
stored ones would otherwise cost ten argon2 runs (an easy way to burn the server's CPU). The salt
keeps equal codes of two users (or two sets) from sharing a hash. Input is read leniently (case,
spaces and dashes do not matter): these are typed from paper.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets

COUNT = 10
_BYTES = 15  # 120 bits: 24 base32 letters, no padding
_GROUP = 4
_LETTERS = re.compile(r"^[a-z2-7]{24}$")


def new_codes(count: int = COUNT) -> list[str]:
    """``count`` fresh codes, formatted for a person to write down."""
    return [
        _format(base64.b32encode(secrets.token_bytes(_BYTES)).decode().lower())
        for _ in range(count)
    ]


def _format(letters: str) -> str:
    return "-".join(letters[i : i + _GROUP] for i in range(0, len(letters), _GROUP))


def normalise(code: str) -> str | None:
    """The 24 letters of a code as typed (any case, spaces and dashes ignored), or None."""
    letters = "".join(code.split()).replace("-", "").lower()
    return letters if _LETTERS.fullmatch(letters) else None


def new_salt() -> str:
    return secrets.token_hex(16)


def digest(salt: str, letters: str) -> str:
    """The stored form of a normalised code."""
    return hmac.new(bytes.fromhex(salt), letters.encode(), hashlib.sha256).hexdigest()


def matches(salt: str, stored: str, letters: str) -> bool:
    return hmac.compare_digest(digest(salt, letters), stored)
