"""``garrison sessions prune``: retention for ended sessions (V5), the sibling of ``audit prune``.

Deletes refresh families (API sessions and browser cookie sessions alike) that were revoked or
expired more than ``--older-than`` ago, with their refresh tokens. Live sessions are never touched.
Runs as the service's own login (``DATABASE_URL``): app_rw may delete these rows.
"""

from __future__ import annotations

from typing import Annotated

import typer

from garrison.audit.event import AuditEvent
from garrison.audit.query import parse_age
from garrison.cli.context import cli_actor, state
from garrison.cli.output import emit, errors_as_exit, out

app = typer.Typer(help="Sessions (refresh families): retention.", no_args_is_help=True)


@app.command("prune")
def prune(
    ctx: typer.Context,
    older_than: Annotated[
        str,
        typer.Option("--older-than", help="Delete sessions that ended longer ago than this."),
    ] = "30d",
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Delete revoked and expired sessions that ended more than --older-than ago (default 30d)."""
    svc = state(ctx).services()
    with errors_as_exit(as_json):
        age = parse_age(older_than)
        deleted = svc.sessions.prune(svc.clock() - age)
        svc.audit.record_sync(
            AuditEvent(
                action="admin.sessions.prune",
                outcome="success",
                actor=cli_actor(),
                details={"deleted": deleted, "older_than": older_than},
            )
        )
    emit(
        {"deleted": deleted, "older_than": older_than},
        as_json,
        lambda: out.print(f"pruned {deleted} session(s) that ended more than {older_than} ago"),
    )
