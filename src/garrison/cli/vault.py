"""``garrison vault status|rewrap`` (V3): where the data keys stand, and moving them to the new KEK.

Rotation without downtime, for N replicas:

1. add the new key to ``GARRISON_SECRET_ENCRYPTION_KEYS_OLD`` (the list of keys that decrypt but do
   not encrypt) and roll the replicas: every one can now read what the new key will write;
2. swap: the new key becomes ``SECRET_ENCRYPTION_KEY``, the previous one moves to the list; roll again;
3. ``garrison vault rewrap`` (online, in batches: each row stays readable under the version it names);
4. ``garrison vault status`` shows no secret on an old version: drop the old key and roll once more.

The users' encrypted emails (V2) are under the same key: ``rewrap`` re-wraps them too, recomputes
their blind index under the current key, and seals any address an older replica stored in plaintext;
``status`` counts them per version.

With a single replica, steps 1 and 2 can be one restart.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from garrison.app import vault_status
from garrison.audit.event import AuditEvent
from garrison.cli.context import state
from garrison.cli.output import emit, err, errors_as_exit, fail, out
from garrison.cli.users import cli_actor

app = typer.Typer(
    help="Vault: key versions in use, re-wrap under the current key.", no_args_is_help=True
)
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


@app.command("status")
def status(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Secrets per key version; which versions are configured and which is current."""
    svc = state(ctx).services()
    with errors_as_exit(as_json):
        data = vault_status(svc)
    rows = data["versions"]

    def human() -> None:
        out.print(f"current key version {data['current_version']}")
        for row in rows:
            flag = "current" if row["current"] else "old" if row["configured"] else "NOT CONFIGURED"
            out.print(
                f"  version {row['key_version']:>10}  {row['secrets']:>8} secret(s)"
                f"  {row['emails']:>8} email(s)  {row['mfa_seeds']:>6} TOTP seed(s)  {flag}"
            )

    emit(data, as_json, human)


@app.command("rewrap")
def rewrap(
    ctx: typer.Context,
    batch_size: Annotated[
        int, typer.Option("--batch-size", min=1, max=10_000, help="Rows per transaction.")
    ] = 200,
    as_json: JsonOpt = False,
) -> None:
    """Re-wrap every data key under SECRET_ENCRYPTION_KEY, online; exit 1 if any row does not open."""
    svc = state(ctx).services()
    columns = (TextColumn("rewrap"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, console=err, disable=as_json) as bar, errors_as_exit(as_json):
        keys = svc.vault.keys
        stale = sum(n for v, n in svc.vault.versions().items() if v != keys.current)
        stale_emails = sum(n for v, n in svc.users.email_versions().items() if v != keys.current)
        task = bar.add_task("rewrap", total=stale + stale_emails)
        report = svc.vault.rewrap(batch_size=batch_size, progress=lambda n: bar.advance(task, n))
        emails = svc.users.rewrap_emails(
            batch_size=batch_size, progress=lambda n: bar.advance(task, n)
        )
        seeds_moved, seeds_failed = (
            svc.auth.mfa.store.rewrap() if svc.auth.mfa is not None else (0, [])
        )
    failed = len(report.failed) + len(emails.failed) + len(seeds_failed)
    svc.audit.record_sync(
        AuditEvent(
            action="admin.vault.rewrap",
            outcome="failure" if failed else "success",
            actor=cli_actor(),
            details={k: v for k, v in report.as_dict().items() if k != "failed"}
            | {"failed": len(report.failed)}
            | {"emails": {k: v for k, v in emails.as_dict().items() if k != "failed"}}
            | {"emails_failed": len(emails.failed)}
            | {"mfa_seeds_rewrapped": seeds_moved, "mfa_seeds_failed": len(seeds_failed)},
        )
    )
    if failed:
        counted = [f"{len(report.failed)} secret(s)"] if report.failed else []
        counted += [f"{len(emails.failed)} email(s)"] if emails.failed else []
        counted += [f"{len(seeds_failed)} TOTP seed(s)"] if seeds_failed else []
        fail(
            f"{' and '.join(counted)} do not decrypt under any configured key version",
            tuple(f"vault_secrets.id {row_id}" for row_id in report.failed[:20])
            + tuple(f"users.id {row_id} (email)" for row_id in emails.failed[:20])
            + tuple(f"mfa_totp.user_id {user_id}" for user_id in seeds_failed[:20]),
            as_json,
        )
    emit(
        report.as_dict() | {"emails": emails.as_dict(), "mfa_seeds_rewrapped": seeds_moved},
        as_json,
        lambda: out.print(
            f"re-wrapped {report.rewrapped} of {report.pending} secret(s) and {emails.rewrapped}"
            f" of {emails.pending} email(s) under key version {report.current_version}"
            + (f"; {report.skipped} rewritten meanwhile" if report.skipped else "")
            + (f"; {emails.sealed} plaintext email(s) encrypted" if emails.sealed else "")
            + (f"; and {seeds_moved} TOTP seed(s)" if seeds_moved else "")
        ),
    )
