"""The users' email, encrypted at rest (V2; seeds 000 and 002), with a keyed blind index.

The address is sealed like a vault value (``garrison.vault.envelope``): a fresh data key per value,
wrapped by the vault's current KEK (``SECRET_ENCRYPTION_KEY``), the value bound to its column
(``users.email_ciphertext``) and its row (the user's id), so a ciphertext copied into another
user's row does not open. ``garrison vault rewrap`` moves the wrapped keys to a new KEK as it does
the vault's.

Lookups by email use a blind index: HMAC-SHA256 of the normalised address (NFKC, trimmed,
lower-cased) under a key derived from the same vault secret with its own HKDF label
(``keys.EMAIL_INDEX_PURPOSE``). The database sees neither the address nor anything that can be
computed from it without the key. Each index value is computed under the key of the row's
``email_key_version``; during a rotation a lookup asks for the index under every configured
version, and the rewrap recomputes it under the current one.
"""

from __future__ import annotations

import hashlib
import hmac
import unicodedata
from dataclasses import dataclass

from garrison.vault import envelope
from garrison.vault.errors import DecryptError
from garrison.vault.fields import Context, EncryptedField, canonical_aad
from garrison.vault.keys import KeySet

EMAIL_FIELD = EncryptedField("users", "email_ciphertext")


@dataclass(frozen=True, slots=True)
class EmailRef:
    """The user row an email ciphertext belongs to."""

    row_id: str

    def wrap_aad(self, version: int) -> bytes:
        return canonical_aad("garrison-email-dek-v1", self.row_id, version)

    @property
    def value_context(self) -> Context:
        return ()


@dataclass(frozen=True, slots=True)
class SealedEmail:
    """The stored columns of one address."""

    ciphertext: bytes
    key_version: int
    index: str

    def columns(self) -> dict[str, object]:
        return {
            "email": None,
            "email_ciphertext": self.ciphertext,
            "email_key_version": self.key_version,
            "email_index": self.index,
        }


#: The stored columns of a user without an email.
NO_EMAIL: dict[str, object] = {
    "email": None,
    "email_ciphertext": None,
    "email_key_version": None,
    "email_index": None,
}


def normalise_email(email: str) -> str:
    return unicodedata.normalize("NFKC", email).strip().lower()


class EmailCipher:
    def __init__(self, keys: KeySet) -> None:
        self.keys = keys

    def seal(self, user_id: str, email: str) -> SealedEmail:
        version, blob = envelope.encrypt(self.keys, EmailRef(user_id), email.encode(), EMAIL_FIELD)
        return SealedEmail(blob, version, self._index(version, email))

    def open(self, user_id: str, version: int, blob: bytes) -> str:
        """The address, or ``DecryptError`` (wrong key, unknown version, moved or altered)."""
        plaintext = envelope.decrypt(self.keys, EmailRef(user_id), version, blob, EMAIL_FIELD)
        try:
            return plaintext.decode()
        except UnicodeDecodeError:  # authenticated: only a bug could get here
            raise DecryptError() from None

    def index_values(self, email: str) -> list[str]:
        """The blind index of ``email`` under every configured key version, current first."""
        versions = [
            self.keys.current,
            *(v for v in self.keys.email_index_keys if v != self.keys.current),
        ]
        return [self._index(v, email) for v in versions if v in self.keys.email_index_keys]

    def rewrap(self, user_id: str, version: int, blob: bytes) -> SealedEmail:
        """The same address under the current KEK, its index under the current index key."""
        email = self.open(user_id, version, blob)
        fresh = envelope.rewrap(self.keys, EmailRef(user_id), version, blob)
        return SealedEmail(fresh, self.keys.current, self._index(self.keys.current, email))

    def _index(self, version: int, email: str) -> str:
        key = self.keys.email_index_keys.get(version)
        if key is None:
            raise DecryptError()
        return hmac.new(key, normalise_email(email).encode(), hashlib.sha256).hexdigest()
