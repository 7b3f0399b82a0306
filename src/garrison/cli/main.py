"""``garrison``: one entry point for the service and its operations (API.md, "Command line")."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import sqlalchemy as sa
import typer

from garrison.cli import audit as audit_cmd
from garrison.cli import backup as backup_cmd
from garrison.cli import db as db_cmd
from garrison.cli import dbroles as dbroles_cmd
from garrison.cli import doctor as doctor_cmd
from garrison.cli import keys as keys_cmd
from garrison.cli import policy as policy_cmd
from garrison.cli import privacy as privacy_cmd
from garrison.cli import secrets as secrets_cmd
from garrison.cli import serve as serve_cmd
from garrison.cli import sessions as sessions_cmd
from garrison.cli import users as users_cmd
from garrison.cli import vault as vault_cmd
from garrison.cli.context import CliState
from garrison.cli.output import fail_database
from garrison.observability.logging import configure_cli_logging

app = typer.Typer(
    name="garrison",
    help="Garrison: identity, tokens, policy, tenancy and edge protection for any API backend.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def root(
    ctx: typer.Context,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir", help="Where the embedded default keeps its data (GARRISON_DATA_DIR)."
        ),
    ] = None,
) -> None:
    if data_dir is not None:
        os.environ["GARRISON_DATA_DIR"] = str(data_dir)
    configure_cli_logging()  # `serve` replaces it with the service's own configuration
    ctx.obj = CliState()


app.command("serve")(serve_cmd.serve)
app.add_typer(users_cmd.app, name="users")
users_cmd.app.command("export")(privacy_cmd.export)
users_cmd.app.command("delete")(privacy_cmd.delete)
app.add_typer(users_cmd.keys_app, name="api-keys")
app.add_typer(keys_cmd.app, name="keys")
app.add_typer(secrets_cmd.app, name="secrets")
app.add_typer(db_cmd.app, name="db")
db_cmd.app.command("roles")(dbroles_cmd.roles)
app.add_typer(policy_cmd.app, name="policy")
app.add_typer(audit_cmd.app, name="audit")
app.add_typer(sessions_cmd.app, name="sessions")
app.add_typer(backup_cmd.app, name="backup")
app.add_typer(vault_cmd.app, name="vault")
app.command("doctor")(doctor_cmd.doctor_cmd)


def main() -> None:
    try:
        app()
    except sa.exc.SQLAlchemyError as exc:  # a command's database work outside errors_as_exit
        try:
            fail_database(exc)
        except typer.Exit as done:
            raise SystemExit(done.exit_code) from None
