"""``garrison db upgrade|check`` (O2): migrations are an explicit step in production."""

from __future__ import annotations

from typing import Annotated

import typer

from garrison.app import open_database
from garrison.cli.context import state
from garrison.cli.output import emit, err, errors_as_exit, fail, out
from garrison.storage import migrate

app = typer.Typer(help="Database: apply migrations, check for drift.", no_args_is_help=True)
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


@app.command("upgrade")
def upgrade(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Apply every pending migration, showing each as it runs."""
    settings = state(ctx).load()
    with errors_as_exit(as_json):
        db = open_database(settings)
        pending = migrate.pending_revisions(db)
        total = len(pending)
        done: list[str] = []

        def progress(rev: str) -> None:
            done.append(rev)
            if not as_json:
                err.print(f"[{len(done)}/{total}] applying {rev}")

        migrate.upgrade(db, progress)
        head = migrate.current_revision(db)
    emit(
        {"applied": done, "revision": head},
        as_json,
        lambda: out.print(f"database at {head}; applied {len(done)} migration(s)"),
    )


@app.command("check")
def check(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Exit 1 when migrations are pending or the schema drifted from the code."""
    settings = state(ctx).load()
    with errors_as_exit(as_json):
        db = open_database(settings)
        problems = migrate.check(db)
        current = migrate.current_revision(db)
    if problems:
        fail(f"database at {current} is not in step with the code", tuple(problems), as_json)
    emit(
        {"revision": current, "problems": []},
        as_json,
        lambda: out.print(f"database at {current}: up to date"),
    )
