"""The secret vault and field-level encryption (V1-V3): AES-256-GCM envelopes, rotating KEKs."""

from garrison.vault.errors import DecryptError
from garrison.vault.fields import EncryptedField
from garrison.vault.keys import KeySet, VaultConfig
from garrison.vault.store import RewrapReport, SecretInfo, Vault

__all__ = [
    "DecryptError",
    "EncryptedField",
    "KeySet",
    "RewrapReport",
    "SecretInfo",
    "Vault",
    "VaultConfig",
]
