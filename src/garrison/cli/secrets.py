"""``garrison secrets generate`` (C4): fresh values for every secret setting; ``garrison secrets
status`` (C5): when each configured secret was first seen and when it must be rotated."""

from __future__ import annotations

import time
from typing import Annotated

import typer

from garrison.app import open_database
from garrison.cli.context import state
from garrison.cli.output import emit, errors_as_exit, out
from garrison.config import GENERATED_SECRETS
from garrison.config.secret_values import secret_values
from garrison.keys.sealing import new_secret
from garrison.keys.secret_ages import SecretAge, SecretAges, judge

app = typer.Typer(
    help="Secrets: generate strong values, show their rotation.", no_args_is_help=True
)
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]

_STATES = {
    "unset": "not set",
    "unrecorded": "set; not yet seen by `garrison serve`",
    "changed": "changed; recorded on the next start of `garrison serve`",
}


@app.command("generate")
def generate(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Print a fresh 256-bit value for every secret setting, as environment assignments."""
    values = {name: new_secret() for name in GENERATED_SECRETS}

    def human() -> None:
        for name, value in values.items():
            out.print(f"{name}={value}")

    emit(values, as_json, human)


@app.command("status")
def status(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """List each secret setting with the date it was first seen and its rotate-by date (overdue
    ones are flagged). Reads only; `garrison serve` records the dates when it starts."""
    settings = state(ctx).load(check_production=False)
    rotate_days = settings.key_rotate_days
    if not settings.database_url and not (settings.data_dir / "garrison.db").exists():
        ages = judge(
            secret_values(settings), {}, now=time.time(), rotate_days=rotate_days
        )  # nothing recorded
    else:
        with errors_as_exit(as_json):
            db = open_database(settings)
            try:
                ages = SecretAges(db, rotate_days=rotate_days).report(secret_values(settings))
            finally:
                db.dispose()

    def human() -> None:
        for age in ages:
            out.print(f"{age.name:30} {_describe(age)}")

    emit([a.public() for a in ages], as_json, human)


def _describe(age: SecretAge) -> str:
    if age.state != "recorded" or age.first_seen_at is None or age.rotate_by is None:
        return _STATES.get(age.state, age.state)
    seen = time.strftime("%Y-%m-%d", time.gmtime(age.first_seen_at))
    due = time.strftime("%Y-%m-%d", time.gmtime(age.rotate_by))
    flag = "  OVERDUE: rotate now" if age.overdue else ""
    return f"first seen {seen}, rotate by {due}{flag}"
