"""Field-level encryption (V2): a column value sealed with AES-256-GCM and bound to its place.

The associated data names the table, the column and the row id (plus any extra context the caller
binds, such as a tenant), so a sealed value copied into another row, another column or another table
fails to open instead of decrypting there. The sealing itself is ``garrison.keys.sealing``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from garrison.keys.sealing import SealError, seal, unseal
from garrison.vault.errors import DecryptError

Context = Sequence[str | int | None]


def canonical_aad(*parts: str | int | None) -> bytes:
    """An unambiguous encoding of ``parts`` (a JSON array: no separator can be smuggled in)."""
    return json.dumps(list(parts), separators=(",", ":"), ensure_ascii=True).encode()


@dataclass(frozen=True, slots=True)
class EncryptedField:
    """One encrypted column: ``seal`` when writing the row, ``open`` when reading it."""

    table: str
    column: str

    def aad(self, row_id: str, context: Context = ()) -> bytes:
        return canonical_aad("garrison-field-v1", self.table, self.column, row_id, *context)

    def seal(self, key: bytes, row_id: str, plaintext: bytes, context: Context = ()) -> bytes:
        return seal(key, plaintext, self.aad(row_id, context))

    def open(self, key: bytes, row_id: str, sealed: bytes, context: Context = ()) -> bytes:
        """The plaintext, or ``DecryptError`` for any failure (never which one)."""
        try:
            return unseal(key, sealed, self.aad(row_id, context))
        except SealError:
            raise DecryptError() from None
