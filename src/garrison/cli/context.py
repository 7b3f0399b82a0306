"""What every command shares: settings (read once) and services, built lazily."""

from __future__ import annotations

import getpass
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

import anyio
import typer

from garrison.admission import Admission
from garrison.app import Services, build_services
from garrison.cli.output import errors_as_exit
from garrison.config import Settings, load_settings
from garrison.usecases import AdminActions

T = TypeVar("T")


@dataclass
class CliState:
    settings: Settings | None = None
    _services: Services | None = field(default=None, repr=False)

    def load(self, *, check_production: bool = True) -> Settings:
        if self.settings is None:
            with errors_as_exit():
                self.settings = load_settings(os.environ, check_production=check_production)
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


def cli_actor() -> str:
    """How the audit log names the local operator: ``cli:<login>``."""
    try:
        return f"cli:{getpass.getuser()}"
    except (OSError, KeyError):
        return "cli"


def operate(
    ctx: typer.Context,
    command: str,
    work: Callable[[AdminActions, Admission], Awaitable[T]],
    *,
    as_json: bool = False,
) -> T:
    """Run one administrative use case as the local operator: the same function, policy
    decision and audit record as the HTTP route for it; errors exit 1 with their reasons."""
    svc = state(ctx).services()
    actor = svc.admission.operator(cli_actor(), f"garrison {command}")
    with errors_as_exit(as_json):
        return anyio.run(work, svc.admin, actor)
    raise AssertionError("unreachable")  # errors_as_exit exits
