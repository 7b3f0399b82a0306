"""``garrison secrets generate`` (C4): fresh values for every secret setting."""

from __future__ import annotations

from typing import Annotated

import typer

from garrison.cli.output import emit, out
from garrison.config import GENERATED_SECRETS
from garrison.keys.sealing import new_secret

app = typer.Typer(help="Secrets: generate strong values.", no_args_is_help=True)


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
