"""``garrison doctor [--url URL]`` (O4): check this deployment against the seed guides' checklists.

Settings are read as ``serve`` reads them but without the production refusal, so every problem it
would refuse on is reported as a FAIL instead of stopping the run. Exit 1 when any check fails.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

import typer

from garrison import doctor
from garrison.cli.context import state
from garrison.cli.output import emit, out
from garrison.doctor import report


def _base_url(value: str | None) -> str | None:
    if value is None:
        return None
    parts = urlsplit(value)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise typer.BadParameter(
            "an http:// or https:// URL with a host, e.g. https://auth.example.com"
        )
    if parts.query or parts.fragment:
        raise typer.BadParameter("give the base URL only, without a query or fragment")
    return value.rstrip("/")


def doctor_cmd(
    ctx: typer.Context,
    url: Annotated[
        str | None,
        typer.Option(
            "--url",
            help="Base URL of the running deployment to probe over HTTP (only this URL is contacted).",
            callback=_base_url,
        ),
    ] = None,
    aggressive: Annotated[
        bool,
        typer.Option(
            "--aggressive",
            help="Also probe login throttling (sends failed logins for a random name until 429).",
        ),
    ] = False,
    backup_dir: Annotated[
        Path | None,
        typer.Option(
            "--backup-dir",
            help="Where backups are kept (default GARRISON_BACKUP_DIR): the newest one's age is "
            "checked.",
            file_okay=False,
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Check configuration, storage and (with --url) the live service; exit 1 if any check fails.

    Each result is labelled ``target`` (asked of --url over HTTP) or ``local`` (this machine's
    configuration, database and files)."""
    settings = state(ctx).load(check_production=False)
    context = doctor.DoctorContext(
        settings, base_url=url, aggressive=aggressive, backup_dir=backup_dir
    )
    results = doctor.run(context)
    emit(report.as_json(results), as_json, lambda: report.render(out, results, target=url))
    raise typer.Exit(doctor.exit_code(results))
