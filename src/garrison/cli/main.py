"""``garrison``: one entry point for the service and its operations (API.md, "Command line")."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from garrison.cli import db as db_cmd
from garrison.cli import keys as keys_cmd
from garrison.cli import secrets as secrets_cmd
from garrison.cli import serve as serve_cmd
from garrison.cli import users as users_cmd
from garrison.cli.context import CliState

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
    ctx.obj = CliState()


app.command("serve")(serve_cmd.serve)
app.add_typer(users_cmd.app, name="users")
app.add_typer(users_cmd.keys_app, name="api-keys")
app.add_typer(keys_cmd.app, name="keys")
app.add_typer(secrets_cmd.app, name="secrets")
app.add_typer(db_cmd.app, name="db")


def main() -> None:
    app()
