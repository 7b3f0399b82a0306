"""The one error every failed decryption becomes (V1): no hint of which check failed."""

from __future__ import annotations

from garrison.errors import GarrisonError


class DecryptError(GarrisonError):
    """Wrong key, unknown key version, flipped bit, or ciphertext moved to another row or tenant.

    Deliberately a single type and message: telling these apart would tell an attacker which of
    their edits the database noticed.
    """

    status = 500
    code = "decrypt_failed"
    title = "Stored data cannot be decrypted"
