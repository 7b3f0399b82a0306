"""Envelope encryption of vault secrets (V1, V3).

Each secret gets its own random 256-bit data key (DEK). The value is sealed under the DEK as an
``EncryptedField`` of ``vault_secrets.ciphertext`` bound to (row id, tenant, name); the DEK is sealed
("wrapped") under the key-encryption key of ``key_version`` with associated data (tenant, name,
key_version). Rotating the KEK therefore re-wraps 60 bytes per secret and never touches a value,
and a ciphertext moved to another tenant, name, row or key version does not open.

The same envelope seals other columns that hold a secret (the TOTP seeds of ``mfa_totp``): the
caller names the column (``field``), whose table, column and row id the value's AAD binds, so a
sealed seed does not open as a vault secret or in another user's row, and ``garrison vault
rewrap`` can move its data key like any other.

Stored layout (``vault_secrets.ciphertext``)::

    0x01 | wrapped DEK (12-byte nonce, 32-byte key, 16-byte tag) | nonce | sealed value | tag
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Protocol

from garrison.keys.sealing import NONCE_BYTES, SealError, seal, unseal
from garrison.vault.errors import DecryptError
from garrison.vault.fields import Context, EncryptedField, canonical_aad
from garrison.vault.keys import KeySet

FORMAT = b"\x01"
DEK_BYTES = 32
_TAG_BYTES = 16
WRAPPED_BYTES = NONCE_BYTES + DEK_BYTES + _TAG_BYTES
VALUE_FIELD = EncryptedField("vault_secrets", "ciphertext")


class Place(Protocol):
    """Where an envelope belongs: the row its value is bound to, and its DEK's wrapping context."""

    @property
    def row_id(self) -> str: ...

    def wrap_aad(self, version: int) -> bytes: ...

    @property
    def value_context(self) -> Context: ...


@dataclass(frozen=True, slots=True)
class SecretRef:
    """Where a ciphertext belongs: it opens only there."""

    row_id: str
    tenant: str | None
    name: str

    def wrap_aad(self, version: int) -> bytes:
        return canonical_aad("garrison-vault-dek-v1", self.tenant, self.name, version)

    @property
    def value_context(self) -> tuple[str | None, str]:
        return (self.tenant, self.name)


def encrypt(
    keys: KeySet, ref: Place, plaintext: bytes, field: EncryptedField = VALUE_FIELD
) -> tuple[int, bytes]:
    """``(key_version, ciphertext)`` under a fresh DEK wrapped by the current KEK; ``field``
    names the column the value is sealed for (the vault's, or another encrypted column, V2)."""
    dek = os.urandom(DEK_BYTES)
    wrapped = seal(keys.current_kek, dek, ref.wrap_aad(keys.current))
    sealed = field.seal(dek, ref.row_id, plaintext, ref.value_context)
    return keys.current, FORMAT + wrapped + sealed


def decrypt(
    keys: KeySet, ref: Place, version: int, blob: bytes, field: EncryptedField = VALUE_FIELD
) -> bytes:
    wrapped, sealed = _split(blob)
    dek = _unwrap(keys, ref, version, wrapped)
    return field.open(dek, ref.row_id, sealed, ref.value_context)


def rewrap(keys: KeySet, ref: Place, version: int, blob: bytes) -> bytes:
    """The same ciphertext with its DEK wrapped by the current KEK (the value is not re-sealed)."""
    wrapped, sealed = _split(blob)
    dek = _unwrap(keys, ref, version, wrapped)
    return FORMAT + seal(keys.current_kek, dek, ref.wrap_aad(keys.current)) + sealed


def _split(blob: bytes) -> tuple[bytes, bytes]:
    if len(blob) < 1 + WRAPPED_BYTES + NONCE_BYTES + _TAG_BYTES or blob[:1] != FORMAT:
        raise DecryptError()
    return blob[1 : 1 + WRAPPED_BYTES], blob[1 + WRAPPED_BYTES :]


def _unwrap(keys: KeySet, ref: Place, version: int, wrapped: bytes) -> bytes:
    kek = keys.kek(version)
    if kek is None:
        raise DecryptError()
    try:
        return unseal(kek, wrapped, ref.wrap_aad(version))
    except SealError:
        raise DecryptError() from None
