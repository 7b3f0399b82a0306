"""What every command shares: settings (read once) and services, built lazily."""

from __future__ import annotations

from dataclasses import dataclass, field

import typer

from garrison.app import Services, build_services
from garrison.cli.output import errors_as_exit
from garrison.config import Settings, load_settings


@dataclass
class CliState:
    settings: Settings | None = None
    _services: Services | None = field(default=None, repr=False)

    def load(self, *, check_production: bool = True) -> Settings:
        if self.settings is None:
            with errors_as_exit():
                self.settings = load_settings(check_production=check_production)
        return self.settings

    def services(self, *, migrate_schema: bool = True) -> Services:
        if self._services is None:
            settings = self.load()
            with errors_as_exit():
                self._services = build_services(settings, migrate_schema=migrate_schema)
        return self._services


def state(ctx: typer.Context) -> CliState:
    obj = ctx.find_root().obj
    assert isinstance(obj, CliState)
    return obj
