"""``garrison keys rotate|list`` (A6, C5)."""

from __future__ import annotations

import time
from typing import Annotated

import typer

from garrison.cli.context import operate, state
from garrison.cli.output import emit, errors_as_exit, out

app = typer.Typer(
    help="Signing keys: rotate (with overlap, or emergency), list.", no_args_is_help=True
)
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


@app.command("rotate")
def rotate(
    ctx: typer.Context,
    emergency: Annotated[
        bool, typer.Option("--emergency", help="Kill every older key at once (a leak).")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Make a new signing key. Old tokens keep verifying until they expire, unless --emergency."""
    state(ctx).services().keyring.load()
    rotation = operate(
        ctx,
        "keys rotate",
        lambda admin, actor: admin.rotate_keys(actor, emergency=emergency),
        as_json=as_json,
    )
    kid = rotation.kid
    note = "older keys revoked now" if emergency else "older keys verify until their tokens expire"
    emit({"kid": kid, "emergency": emergency}, as_json, lambda: out.print(f"new key {kid}; {note}"))


@app.command("list")
def list_keys(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """List signing keys with status and rotate-by date (overdue ones are flagged)."""
    svc = state(ctx).services()
    with errors_as_exit(as_json):
        svc.keyring.load()
        keys = svc.keyring.list()

    def human() -> None:
        for k in keys:
            due = time.strftime("%Y-%m-%d", time.gmtime(k.rotate_by))
            flag = "  OVERDUE: rotate now" if k.overdue else ""
            out.print(f"{k.kid:36} {k.alg:6} {k.status:8} rotate by {due}{flag}")

    emit(
        [
            {
                "kid": k.kid,
                "alg": k.alg,
                "status": k.status,
                "created_at": k.created_at,
                "rotate_by": k.rotate_by,
                "overdue": k.overdue,
            }
            for k in keys
        ],
        as_json,
        human,
    )
