"""Settings: defaults -> garrison.toml -> environment (and ``*_FILE``); frozen; checked once."""

from garrison.config.loader import env_secret, load_settings
from garrison.config.settings import (
    GENERATED_SECRETS,
    OPTIONAL_SECRET_SETTINGS,
    SECRET_SETTINGS,
    Settings,
)

__all__ = [
    "GENERATED_SECRETS",
    "OPTIONAL_SECRET_SETTINGS",
    "SECRET_SETTINGS",
    "Settings",
    "env_secret",
    "load_settings",
]
