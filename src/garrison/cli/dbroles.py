"""``garrison db roles`` (T4): create the migrator, app_rw and app_ro roles with least privilege.

Run it as a superuser against ``DATABASE_URL``, on an empty database or a migrated one;
``--dry-run`` prints the SQL instead (for the ``garrison`` database when the URL is not
PostgreSQL). Then run migrations as the migrator (``GARRISON_MIGRATOR_DATABASE_URL``) and the
service as app_rw (``DATABASE_URL``). Each role's password comes from its setting
(``GARRISON_DB_MIGRATOR_PASSWORD``, ``GARRISON_DB_APP_RW_PASSWORD``, ``GARRISON_DB_APP_RO_PASSWORD``,
or their ``*_FILE`` variants), is sent hashed, and is never printed; a role whose setting is unset
keeps its password (or has none: certificates, peer authentication).
"""

from __future__ import annotations

from typing import Annotated

import sqlalchemy as sa
import typer

from garrison.app import open_database
from garrison.cli.context import state
from garrison.cli.output import emit, errors_as_exit, out
from garrison.config import Settings
from garrison.config.checks import secret_problem
from garrison.errors import ConfigError
from garrison.storage.db import normalise_url
from garrison.tenancy.dbroles import RoleNames, create_roles, role_sql

JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]

#: role -> the setting its password comes from
PASSWORD_SETTINGS = {
    "migrator": ("GARRISON_DB_MIGRATOR_PASSWORD", "db_migrator_password"),
    "app_rw": ("GARRISON_DB_APP_RW_PASSWORD", "db_app_rw_password"),
    "app_ro": ("GARRISON_DB_APP_RO_PASSWORD", "db_app_ro_password"),
}


def role_passwords(settings: Settings) -> dict[str, str]:
    """The passwords configured for the roles; in production each must be a strong secret."""
    found: dict[str, str] = {}
    problems: list[str] = []
    for role, (name, field) in PASSWORD_SETTINGS.items():
        secret = getattr(settings, field)
        if secret is None:
            continue
        value = secret.get_secret_value()
        problem = secret_problem(name, value) if settings.production else None
        if problem:
            problems.append(problem)
        elif not value:
            problems.append(f"{name}: empty")
        found[role] = value
    if problems:
        raise ConfigError(problems)
    return found


def roles(
    ctx: typer.Context,
    migrator: Annotated[str, typer.Option(help="Owner of the schema; runs migrations.")] = (
        "garrison_migrator"
    ),
    app_rw: Annotated[str, typer.Option("--app-rw", help="The service's login.")] = (
        "garrison_app_rw"
    ),
    app_ro: Annotated[str, typer.Option("--app-ro", help="Read-only reporting login.")] = (
        "garrison_app_ro"
    ),
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the SQL; change nothing.")] = (
        False
    ),
    as_json: JsonOpt = False,
) -> None:
    """Create (or bring up to date) the least-privilege database roles."""
    settings = state(ctx).load(check_production=False)
    with errors_as_exit(as_json):
        names = RoleNames(migrator, app_rw, app_ro)
        passwords = role_passwords(settings)
        url = sa.engine.make_url(normalise_url(settings.effective_database_url))
        if dry_run:
            postgres = url.get_backend_name() == "postgresql"
            statements = role_sql(names, (url.database if postgres else None) or "garrison")
        else:
            db = open_database(settings)
            try:
                statements = create_roles(db, names, passwords)
            finally:
                db.dispose()
    done = "would set" if dry_run else "set"
    status = {role: done if role in passwords else "unchanged" for role in PASSWORD_SETTINGS}
    data = {
        "applied": not dry_run,
        "roles": {"migrator": migrator, "app_rw": app_rw, "app_ro": app_ro},
        "passwords": status,
        "statements": statements,
    }

    def human() -> None:
        if dry_run:
            out.print(";\n\n".join(statements) + ";", markup=False)
            for role, (name, _) in PASSWORD_SETTINGS.items():
                if role in passwords:
                    out.print(f"-- and the password of {role} from {name} (not shown)")
            return
        out.print(f"roles ready: migrator={migrator} app_rw={app_rw} app_ro={app_ro}")
        for role, (name, _) in PASSWORD_SETTINGS.items():
            said = f"set from {name}" if role in passwords else f"unchanged ({name} unset)"
            out.print(f"  password of {role}: {said}")
        out.print(
            "next: `garrison db upgrade` with GARRISON_MIGRATOR_DATABASE_URL (the migrator), "
            "then `garrison serve` with DATABASE_URL (app_rw)"
        )

    emit(data, as_json, human)
