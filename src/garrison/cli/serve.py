"""``garrison serve``: run the service (granian), printing where it listens and what to do next."""

from __future__ import annotations

import os
import shlex
from pathlib import Path
from typing import Annotated

import sqlalchemy as sa
import typer

from garrison.app import Services
from garrison.cli.context import state
from garrison.cli.output import err, errors_as_exit
from garrison.config import Settings
from garrison.config.secret_values import configured_values
from garrison.gateway import server
from garrison.keys.secret_ages import SecretAges
from garrison.storage.db import error_summary


def serve(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to bind.", min=0, max=65535)] = 8080,
    workers: Annotated[int, typer.Option(help="Worker processes.", min=1, max=64)] = 1,
) -> None:
    """Run Garrison. With no configuration: development mode on SQLite under ./.garrison/."""
    cli = state(ctx)
    settings = cli.load()
    served = served_issuer(settings, host, port)
    if served is not None:  # every worker reads it, so tokens, JWKS URL and discovery agree
        os.environ["GARRISON_ISSUER"] = served
        cli.settings = None
        settings = cli.load()
    services = cli.services()  # validates, migrates (development) and loads keys before binding
    services.keyring.load()
    _record_secret_ages(services)
    has_admin = services.users.count_admins() > 0
    services.close()
    mode = "production" if settings.production else "development"
    err.print(f"[bold]Garrison[/] {mode} mode")
    err.print(f"  database  {_safe_url(settings.effective_database_url)}")
    err.print(f"  limiter   {'redis' if settings.use_redis_limiter else 'memory'}")
    err.print(f"  listening http://{host}:{port}  (health: /healthz, JWKS: /.well-known/jwks.json)")
    err.print(f"  issuer    {settings.issuer}")
    if not has_admin:
        err.print(
            "  no admin yet; create the first one with:\n"
            f"    garrison {_data_dir_option(settings)}"
            "users create --username admin --role admin --password-stdin",
            markup=False,
            highlight=False,
        )
    os.environ["GARRISON_DATA_DIR"] = str(settings.data_dir)
    with errors_as_exit():
        server.run(host, port, workers=workers, log_level=settings.log_level)


def served_issuer(settings: Settings, host: str, port: int) -> str | None:
    """The issuer of a development service without ``GARRISON_ISSUER``: the address it serves
    (a wildcard bind answers on the loopback too). None: the configured issuer stands (always in
    production, where the public URL is the operator's to name)."""
    if settings.production or "issuer" in settings.model_fields_set or port == 0:
        return None
    name = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    return f"http://[{name}]:{port}" if ":" in name else f"http://{name}:{port}"


def _data_dir_option(settings: Settings) -> str:
    """``--data-dir D `` when the service runs on another data dir than the default, so the
    printed command acts on the same database."""
    if settings.data_dir == Path(".garrison"):
        return ""
    return f"--data-dir {shlex.quote(str(settings.data_dir))} "


def _record_secret_ages(services: Services) -> None:
    """Note when each configured secret was first seen (C5). Reporting only: a failure is
    logged and the start goes on (the doctor then shows the secrets as not yet recorded)."""
    settings = services.settings
    ages = SecretAges(services.db, rotate_days=settings.key_rotate_days, clock=services.clock)
    try:
        ages.observe(configured_values(settings))
    except sa.exc.SQLAlchemyError as exc:
        err.print(f"  warning: secret first-seen dates not recorded ({error_summary(exc)})")


def _safe_url(url: str) -> str:
    if "@" in url:
        scheme, _, rest = url.partition("://")
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url
