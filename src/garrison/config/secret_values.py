"""The secret settings a configuration sets, for the rotation report (C5).

Here, beside ``Settings``, so ``garrison.keys.secret_ages`` judges ages from plain values and
never reads the settings.
"""

from __future__ import annotations

from pydantic import SecretStr

from garrison.config.settings import OPTIONAL_SECRET_SETTINGS, SECRET_SETTINGS, Settings
from garrison.keys.secret_ages import SecretValues

#: Secret settings that are not tracked: previous vault keys are on their way out, not in use.
_UNTRACKED = frozenset({"GARRISON_SECRET_ENCRYPTION_KEYS_OLD"})


def tracked_settings() -> tuple[str, ...]:
    """Every secret setting (a ``SecretStr`` field), in a stable order: required ones first."""
    names = [
        info.alias
        for info in Settings.model_fields.values()
        if info.alias and info.annotation == (SecretStr | None) and info.alias not in _UNTRACKED
    ]
    first = [*SECRET_SETTINGS, *OPTIONAL_SECRET_SETTINGS]
    return (*first, *sorted(n for n in names if n not in first))


def configured_values(settings: Settings) -> dict[str, str]:
    """The tracked secrets this configuration sets, by setting name."""
    by_alias = {info.alias: name for name, info in Settings.model_fields.items() if info.alias}
    found: dict[str, str] = {}
    for alias in tracked_settings():
        value = getattr(settings, by_alias[alias])
        if isinstance(value, SecretStr) and value.get_secret_value():
            found[alias] = value.get_secret_value()
    return found


def secret_values(settings: Settings) -> SecretValues:
    """What ``SecretAges.report`` and ``judge`` need from this configuration."""
    return SecretValues(tracked_settings(), configured_values(settings))
