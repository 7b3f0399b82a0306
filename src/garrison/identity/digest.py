"""The one digest of a high-entropy secret held only as its hash (A5): a refresh token, an API key,
an MFA login token, an OIDC ``state`` or browser binding. SHA-256 in hex is enough for a random
value of 128 bits or more; a password is never hashed here (argon2id, ``identity.passwords``)."""

from __future__ import annotations

import hashlib


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
