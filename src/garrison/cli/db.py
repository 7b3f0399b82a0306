"""``garrison db upgrade|check`` (O2): migrations are an explicit step in production.

``upgrade`` connects as the migrator, the schema's owner (``GARRISON_MIGRATOR_DATABASE_URL``; without
it, ``DATABASE_URL``); the service itself runs as app_rw, which may not change the schema.
"""

from __future__ import annotations

from typing import Annotated

import sqlalchemy as sa
import typer

from garrison.app import open_database, open_migrator_database, upgrade_schema
from garrison.cli.context import state
from garrison.cli.output import emit, err, errors_as_exit, fail, out
from garrison.errors import GarrisonError
from garrison.storage import migrate

app = typer.Typer(help="Database: apply migrations, check for drift.", no_args_is_help=True)
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


@app.command("upgrade")
def upgrade(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Apply every pending migration, showing each as it runs."""
    settings = state(ctx).load()
    with errors_as_exit(as_json):
        db = open_migrator_database(settings)
        pending = migrate.pending_revisions(db)
        total = len(pending)
        done: list[str] = []

        def progress(rev: str) -> None:
            done.append(rev)
            if not as_json:
                err.print(f"[{len(done)}/{total}] applying {rev}")

        try:
            upgrade_schema(settings, db, progress)
        except sa.exc.DBAPIError as exc:
            reason = str(exc.orig).strip().splitlines()[0] if exc.orig else type(exc).__name__
            where = (
                "GARRISON_MIGRATOR_DATABASE_URL"
                if settings.migrator_database_url
                else ("DATABASE_URL")
            )
            raise GarrisonError(
                f"migration {done[-1] if done else ''} failed and was rolled back: {reason}",
                reasons=[f"{where}: run migrations as the migrator, the schema's owner"],
            ) from None
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
