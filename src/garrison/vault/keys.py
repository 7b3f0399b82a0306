"""The vault's key-encryption keys (V1, V3): the current one wraps, every configured one unwraps.

``SECRET_ENCRYPTION_KEY`` is the current KEK; ``GARRISON_SECRET_ENCRYPTION_KEYS_OLD`` (comma-separated)
lists the previous ones, which keep decrypting until ``garrison vault rewrap`` has moved every data
key to the current KEK. A key's *version* is a 31-bit fingerprint of the key itself, not its position
in a list: reordering the settings or dropping an old key can never make a version name the wrong
key, and a row whose version is not configured fails to open instead of being tried against others.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from garrison.config.strength import secret_problem
from garrison.errors import ConfigError
from garrison.keys.sealing import derive_key

#: HKDF purposes: the KEK itself, and the (non-secret) fingerprint that names its version.
KEK_PURPOSE = b"vault-kek"
_VERSION_PURPOSE = b"vault-kek-version"
#: HKDF purpose of the key of the users' email blind index (V2), one per vault key version
EMAIL_INDEX_PURPOSE = b"email-blind-index"
OLD_KEYS_SETTING = "GARRISON_SECRET_ENCRYPTION_KEYS_OLD"


def key_version(secret: str) -> int:
    """A stable, positive 31-bit id for ``secret`` (fits the ``key_version`` INTEGER column)."""
    digest = derive_key(secret, _VERSION_PURPOSE)
    return int.from_bytes(digest[:4], "big") & 0x7FFF_FFFF or 1


def split_old_keys(raw: str | None) -> list[str]:
    """The comma-separated list of previous keys, blanks ignored."""
    return [part.strip() for part in (raw or "").split(",") if part.strip()]


@dataclass(frozen=True, slots=True)
class VaultConfig:
    """The vault's keys as the settings give them, built once by the composition root (issue 8):
    the resolved ``SECRET_ENCRYPTION_KEY``, the ``GARRISON_SECRET_ENCRYPTION_KEYS_OLD`` list, and
    whether production's strength bar applies to the old ones (C2)."""

    current_key: str = field(repr=False)
    old_keys: tuple[str, ...] = field(default=(), repr=False)
    production: bool = False


@dataclass(frozen=True, slots=True)
class KeySet:
    """KEKs by version; ``current`` is the version new data keys are wrapped under."""

    current: int
    keks: Mapping[int, bytes]
    #: by the same versions: the keys of the email blind index (``garrison.vault.emails``)
    email_index_keys: Mapping[int, bytes] = field(default_factory=dict)

    @classmethod
    def from_secrets(
        cls, current: str, old: Iterable[str] = (), *, production: bool = False
    ) -> KeySet:
        """Derive every KEK; in production each old key must be as strong as a current one (C2)."""
        old = list(old)
        if production:
            problems = [
                f"{OLD_KEYS_SETTING}[{i}]: {problem.split(': ', 1)[1]}"
                for i, value in enumerate(old)
                if (problem := secret_problem(OLD_KEYS_SETTING, value))
            ]
            if problems:
                raise ConfigError(problems)
        keks = {key_version(secret): derive_key(secret, KEK_PURPOSE) for secret in old}
        index = {key_version(secret): derive_key(secret, EMAIL_INDEX_PURPOSE) for secret in old}
        version = key_version(current)
        keks[version] = derive_key(current, KEK_PURPOSE)
        index[version] = derive_key(current, EMAIL_INDEX_PURPOSE)
        return cls(version, keks, index)

    @classmethod
    def from_config(cls, config: VaultConfig) -> KeySet:
        return cls.from_secrets(config.current_key, config.old_keys, production=config.production)

    def kek(self, version: int) -> bytes | None:
        return self.keks.get(version)

    @property
    def current_kek(self) -> bytes:
        return self.keks[self.current]

    def knows(self, version: int) -> bool:
        return version in self.keks
