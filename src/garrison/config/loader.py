"""Build ``Settings`` from defaults, then ``garrison.toml``, then the environment.

The environment wins over the file; every setting ``X`` may instead be given as ``X_FILE`` naming a
file that holds the value (Docker and Kubernetes secrets). ``.env`` is read only in development
(C1), and never overrides the real environment.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dotenv import dotenv_values
from pydantic import ValidationError as PydanticValidationError

from garrison.config.checks import production_problems
from garrison.config.settings import Settings
from garrison.errors import ConfigError

_LIST_SETTINGS = {"GARRISON_CORS_ORIGINS", "GARRISON_TRUSTED_PROXIES", "GARRISON_CSP_CONNECT_SRC"}
_TOML_SECTIONS = {"roles", "actions", "routes", "rate_limits", "oidc", "external_idps"}


def _aliases() -> dict[str, str]:
    """Public setting name -> field name, for every field that has one."""
    return {
        field.alias: name
        for name, field in Settings.model_fields.items()
        if field.alias is not None
    }


def _read_env(environ: Mapping[str, str], problems: list[str]) -> dict[str, str]:
    values: dict[str, str] = {}
    for alias in _aliases():
        file_var = f"{alias}_FILE"
        if alias in environ and file_var in environ:
            problems.append(f"{alias}: set both {alias} and {file_var}; keep one")
            continue
        if file_var in environ:
            path = Path(environ[file_var])
            try:
                values[alias] = path.read_text(encoding="utf-8").strip()
            except OSError as exc:
                problems.append(f"{file_var}: cannot read {path}: {exc.strerror}")
        elif alias in environ:
            values[alias] = environ[alias]
    return values


def _read_toml(path: Path, problems: list[str]) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        problems.append(f"GARRISON_CONFIG: {path} does not exist")
        return {}
    except (OSError, tomllib.TOMLDecodeError) as exc:
        problems.append(f"GARRISON_CONFIG: {path} is not valid TOML: {exc}")
        return {}
    aliases = _aliases()
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key in _TOML_SECTIONS:
            out[key] = value
        elif key.upper() in aliases:
            out[key.upper()] = value
        elif key in Settings.model_fields:
            alias = Settings.model_fields[key].alias
            out[alias or key] = value
        else:
            problems.append(f"{path}: unknown setting {key!r}")
    return out


def _split_lists(values: dict[str, Any]) -> None:
    for name in _LIST_SETTINGS:
        raw = values.get(name)
        if isinstance(raw, str):
            values[name] = tuple(part.strip() for part in raw.split(",") if part.strip())


def load_settings(
    environ: Mapping[str, str],
    *,
    overrides: Mapping[str, Any] | None = None,
    check_production: bool = True,
) -> Settings:
    """Read, merge and validate settings; raise ``ConfigError`` listing every problem at once.

    ``environ`` is the process environment, handed over by the entry point (``garrison serve``,
    the CLI): nothing below the entry points reads ``os.environ`` (C1)."""
    env = dict(environ)
    problems: list[str] = []
    if env.get("GARRISON_ENV", "development") != "production":
        dotenv_path = Path(env.get("GARRISON_DOTENV", ".env"))
        if dotenv_path.is_file():
            for key, value in dotenv_values(dotenv_path).items():
                if value is not None:
                    env.setdefault(key, value)
    from_env = _read_env(env, problems)
    merged: dict[str, Any] = {}
    config_path = from_env.get("GARRISON_CONFIG") or (overrides or {}).get("GARRISON_CONFIG")
    if config_path:
        merged.update(_read_toml(Path(config_path), problems))
    elif Path("garrison.toml").is_file():
        merged.update(_read_toml(Path("garrison.toml"), problems))
        merged["GARRISON_CONFIG"] = "garrison.toml"
    merged.update(from_env)
    merged.update(overrides or {})
    _split_lists(merged)
    # Every phase runs, whatever an earlier one found, so one refusal names every setting (C2):
    # unreadable sources, then values that do not validate, then production's own bar, judged on
    # the settings that did validate (a bad value is left out, not judged a second time).
    settings: Settings | None = None
    try:
        settings = Settings.model_validate(merged)
    except PydanticValidationError as exc:
        problems.extend(_describe(err) for err in exc.errors())
        settings = _without_invalid(merged, exc)
    if settings is not None and check_production and settings.production:
        named = {_setting_of(p) for p in problems}
        problems.extend(p for p in production_problems(settings) if _setting_of(p) not in named)
    if problems or settings is None:
        raise ConfigError(problems)
    return settings


def _setting_of(problem: str) -> str:
    """The setting a problem names: ``X_FILE: cannot read`` is about ``X``."""
    return problem.split(":", 1)[0].strip().removesuffix("_FILE")


def _without_invalid(merged: dict[str, Any], exc: PydanticValidationError) -> Settings | None:
    """The settings with every invalid value left at its default, to judge the rest; None when an
    error is not about one setting (a check across settings)."""
    bad = {err["loc"][0] for err in exc.errors() if err.get("loc")}
    if any(not err.get("loc") for err in exc.errors()):
        return None
    try:
        return Settings.model_validate({k: v for k, v in merged.items() if k not in bad})
    except PydanticValidationError:
        return None


def env_secret(name: str, environ: Mapping[str, str]) -> str | None:
    """A secret named indirectly (an OIDC ``client_secret_env``, an IdP's ``hs256_secret_env``):
    ``NAME``, or the content of the file ``NAME_FILE`` names (C1); None when neither is set."""
    if name in environ:
        return environ[name]
    path = environ.get(f"{name}_FILE")
    if path:
        try:
            with open(path, encoding="utf-8") as fh:
                return fh.read().strip()
        except OSError as exc:
            raise ConfigError([f"{name}_FILE: cannot read {path}: {exc.strerror}"]) from None
    return None


def _describe(err: Mapping[str, Any]) -> str:
    where = ".".join(str(part) for part in err.get("loc", ())) or "settings"
    return f"{where}: {err.get('msg', 'invalid value')}"
