"""AES-256-GCM sealing of small secrets under a key-encryption key (private signing keys)."""

from __future__ import annotations

import base64
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from garrison.errors import GarrisonError

NONCE_BYTES = 12


class SealError(GarrisonError):
    code = "unseal_failed"
    title = "Cannot decrypt stored key material"


def derive_key(secret: str, purpose: bytes) -> bytes:
    """32 bytes for ``purpose`` from a configured secret (>= 32 bytes in production)."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=b"garrison-v1", info=purpose).derive(
        secret.encode()
    )


def seal(key: bytes, plaintext: bytes, aad: bytes) -> bytes:
    nonce = os.urandom(NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, aad)


def unseal(key: bytes, sealed: bytes, aad: bytes) -> bytes:
    try:
        return AESGCM(key).decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], aad)
    except (InvalidTag, ValueError):
        raise SealError("key material does not decrypt: wrong GARRISON_KEYRING_KEY?") from None


def new_secret() -> str:
    return base64.urlsafe_b64encode(os.urandom(32)).decode().rstrip("=")
