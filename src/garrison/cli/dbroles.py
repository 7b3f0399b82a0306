"""``garrison db roles`` (T4): create the migrator, app_rw and app_ro roles with least privilege.

Run it as a superuser (or the database owner) against ``DATABASE_URL``; ``--dry-run`` prints the
SQL instead (for the ``garrison`` database when the URL is not PostgreSQL). Then run migrations as the migrator and the service as app_rw. Roles get LOGIN but no
password: set one with ``ALTER ROLE ... PASSWORD`` from your secret store, or use certificates.
"""

from __future__ import annotations

from typing import Annotated

import sqlalchemy as sa
import typer

from garrison.app import open_database
from garrison.cli.context import state
from garrison.cli.output import emit, errors_as_exit, out
from garrison.storage.db import normalise_url
from garrison.tenancy.dbroles import RoleNames, create_roles, role_sql

JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


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
        url = sa.engine.make_url(normalise_url(settings.effective_database_url))
        if dry_run:
            postgres = url.get_backend_name() == "postgresql"
            statements = role_sql(names, (url.database if postgres else None) or "garrison")
        else:
            db = open_database(settings)
            try:
                statements = create_roles(db, names)
            finally:
                db.dispose()
    data = {
        "applied": not dry_run,
        "roles": {"migrator": migrator, "app_rw": app_rw, "app_ro": app_ro},
        "statements": statements,
    }

    def human() -> None:
        if dry_run:
            out.print(";\n\n".join(statements) + ";", markup=False)
        else:
            out.print(f"roles ready: migrator={migrator} app_rw={app_rw} app_ro={app_ro}")
            out.print("next: set their passwords, migrate as the migrator, serve as app_rw")

    emit(data, as_json, human)
