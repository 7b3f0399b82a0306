"""``garrison audit verify|query|export|prune`` (L4, L5, L7, V5)."""

from __future__ import annotations

import os
import sys
from contextlib import ExitStack
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, TextIO

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from garrison.app import Services, open_migrator_database
from garrison.audit import query as q
from garrison.audit.checkpoint import stored_public_keys
from garrison.audit.event import AuditEvent
from garrison.audit.retention import prune as prune_log
from garrison.audit.verify import parse_anchor, verify_chain
from garrison.cli.context import state
from garrison.cli.output import emit, err, errors_as_exit, fail, out
from garrison.cli.users import cli_actor
from garrison.storage.files import open_private

app = typer.Typer(
    help="The audit log: verify the chain, query, export, prune.", no_args_is_help=True
)


class Preset(StrEnum):
    """The ready-made queries of L4 (``garrison.audit.query.preset``)."""

    ADMIN_ACTIONS = "admin-actions"
    FAILED_LOGINS = "failed-logins"
    ACTOR = "actor"


JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
ActionOpt = Annotated[
    str | None, typer.Option("--action", help="An action, or a prefix ending in '.' or '*'.")
]
ActorOpt = Annotated[str | None, typer.Option("--actor", help="User id, key id, 'cli:<user>'.")]
TenantOpt = Annotated[str | None, typer.Option("--tenant", help="Only this tenant's records.")]
OutcomeOpt = Annotated[
    str | None, typer.Option("--outcome", help="success, failure, deny or error.")
]
SinceOpt = Annotated[
    str | None, typer.Option("--since", help="24h, 7d, an ISO 8601 time or UNIX seconds.")
]
UntilOpt = Annotated[str | None, typer.Option("--until", help="Same forms as --since.")]


def _filter(
    svc: Services,
    action: str | None,
    actor: str | None,
    tenant: str | None,
    outcome: str | None,
    since: str | None,
    until: str | None,
    *,
    limit: int | None,
) -> q.AuditFilter:
    """The filter the options give (the same for ``query`` and ``export``)."""
    now = svc.clock()
    return q.AuditFilter(
        action=action,
        actor=actor,
        tenant=tenant,
        outcome=outcome,
        since=q.parse_time(since, now, name="since") if since else None,
        until=q.parse_time(until, now, name="until") if until else None,
        limit=limit,
    )


@app.command("verify")
def verify(
    ctx: typer.Context,
    anchor: Annotated[
        str | None,
        typer.Option(
            "--anchor", help="SEQ:HASH an earlier run printed: also catches a log cut short."
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Walk the hash chain; exit 1 naming the first edited, deleted, inserted or moved record."""
    svc = state(ctx).services()
    with errors_as_exit(as_json):
        pinned = parse_anchor(anchor) if anchor else None
        report = verify_chain(svc.db, stored_public_keys(svc.db), svc.audit_seal, anchor=pinned)

    def human() -> None:
        if report.ok:
            out.print(
                f"audit chain intact: {report.checked} record(s)"
                + (f", from checkpoint {report.root_seq}" if report.root_seq else "")
            )
            if report.anchored_seq is not None:
                out.print(f"the head file's record {report.anchored_seq} is still in the log")
            out.print(
                f"head (keep it; pass it as --anchor later): {report.head_seq}:{report.head_hash}"
            )
        else:
            err.print(f"[bold red]audit chain broken[/] at record {report.first_bad_seq}")
            err.print(f"  {report.problem}")

    emit(report.as_dict(), as_json, human)
    if not report.ok:
        raise typer.Exit(1)


@app.command("query")
def query(
    ctx: typer.Context,
    preset: Annotated[
        Preset | None,
        typer.Option("--preset", help="failed-logins covers the last 24 h; actor needs --actor."),
    ] = None,
    action: ActionOpt = None,
    actor: ActorOpt = None,
    tenant: TenantOpt = None,
    outcome: OutcomeOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=q.MAX_LIMIT)] = 100,
    as_json: JsonOpt = False,
) -> None:
    """Search the audit log, newest first; --preset gives the ready-made queries."""
    svc = state(ctx).services()
    with errors_as_exit(as_json):
        base = _filter(svc, action, actor, tenant, outcome, since, until, limit=limit)
        if preset is not None:
            ready = q.preset(preset.value, svc.clock(), actor=actor)
            base = _merge(ready, base)
        records = q.search(svc.db, base)
    emit(records, as_json, lambda: out.print(_table(records)))


def _merge(ready: q.AuditFilter, extra: q.AuditFilter) -> q.AuditFilter:
    """A preset narrowed by any explicit filter given with it."""
    return q.AuditFilter(
        action=extra.action or ready.action,
        actor=extra.actor or ready.actor,
        tenant=extra.tenant or ready.tenant,
        outcome=extra.outcome or ready.outcome,
        outcomes=ready.outcomes if extra.outcome is None else (),
        since=extra.since if extra.since is not None else ready.since,
        until=extra.until if extra.until is not None else ready.until,
        limit=extra.limit,
    )


def _table(records: list[dict[str, Any]]) -> Table:
    table = Table("seq", "time", "action", "actor", "tenant", "outcome", "reason", "ip")
    for r in records:
        table.add_row(
            str(r["seq"]),
            r["time"],
            r["action"],
            r["actor"] or "",
            r["tenant"] or "",
            r["outcome"],
            r["reason"] or "",
            r["ip"] or "",
        )
    return table


@app.command("export")
def export(
    ctx: typer.Context,
    output: Annotated[
        Path, typer.Option("--output", "-o", help="File to write; '-' for standard output.")
    ] = Path("-"),
    fmt: Annotated[str, typer.Option("--format", help="jsonl or csv.")] = "jsonl",
    action: ActionOpt = None,
    actor: ActorOpt = None,
    tenant: TenantOpt = None,
    outcome: OutcomeOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Export matching records, oldest first, as JSON lines or CSV (progress on stderr)."""
    if fmt not in ("jsonl", "csv"):
        fail("--format must be jsonl or csv", as_json=as_json, code=2)
    if as_json and str(output) == "-":
        fail("--json needs --output FILE (the summary goes to stdout)", as_json=True, code=2)
    svc = state(ctx).services()
    with errors_as_exit(as_json):
        f = _filter(svc, action, actor, tenant, outcome, since, until, limit=None)
        total = q.count(svc.db, f)
        written = _export(svc, f, output, fmt, total, show=not as_json)
    summary = {"records": written, "format": fmt, "output": str(output)}
    emit(summary, as_json, lambda: err.print(f"exported {written} record(s) to {output}"))


def _export(svc: Services, f: q.AuditFilter, output: Path, fmt: Any, total: int, show: bool) -> int:
    with ExitStack() as stack:
        sink: TextIO = sys.stdout
        if str(output) != "-":
            try:
                fd = open_private(output, os.O_WRONLY | os.O_TRUNC)  # 0600: the audit trail (C6)
            except OSError as exc:
                fail(f"cannot write {output}: {exc.strerror}")
            sink = stack.enter_context(os.fdopen(fd, "w", encoding="utf-8", newline=""))
        progress = Progress(
            TextColumn("exporting"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=err,
            disable=not show,
            transient=True,
        )
        stack.enter_context(progress)
        task = progress.add_task("export", total=total)
        return q.export(svc.db, f, sink, fmt, lambda n: progress.update(task, completed=n))


@app.command("prune")
def prune(
    ctx: typer.Context,
    older_than: Annotated[
        str, typer.Option("--older-than", help="Delete records older than this, e.g. 90d.")
    ],
    as_json: JsonOpt = False,
) -> None:
    """Apply retention: delete old records behind a signed checkpoint; the rest still verifies.

    Deleting audit records is the migrator's right alone: this connects with
    GARRISON_MIGRATOR_DATABASE_URL (without it, DATABASE_URL, which app_rw cannot prune with).
    """
    svc = state(ctx).services()
    with errors_as_exit(as_json):
        age = q.parse_age(older_than)
        svc.keyring.load()
        signer = svc.keyring.current
        now = svc.clock()
        owner = open_migrator_database(svc.settings)
        try:
            result = prune_log(
                owner,
                cutoff=now - age,
                now=now,
                kid=signer.kid,
                sign=signer.sign,
                keys=stored_public_keys(svc.db),
                seal=svc.audit_seal,
            )
        finally:
            if owner is not svc.db:
                owner.dispose()
        svc.audit.record_sync(
            AuditEvent(
                action="admin.audit.prune",
                outcome="success",
                actor=cli_actor(),
                details={"deleted": result.deleted, "checkpoint_seq": result.checkpoint_seq},
            )
        )
    data = {"deleted": result.deleted, "checkpoint_seq": result.checkpoint_seq}
    emit(
        data,
        as_json,
        lambda: out.print(f"pruned {result.deleted} record(s) older than {older_than}"),
    )
