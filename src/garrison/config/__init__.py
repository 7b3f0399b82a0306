"""Settings: defaults -> garrison.toml -> environment (and ``*_FILE``); frozen; checked once."""

from garrison.config.loader import env_secret, load_settings
from garrison.config.settings import SECRET_SETTINGS, Settings

__all__ = ["SECRET_SETTINGS", "Settings", "env_secret", "load_settings"]
