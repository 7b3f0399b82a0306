"""``garrison backup create FILE`` / ``garrison backup restore FILE`` (O1), and retention:
``garrison backup prune DIR [--keep N] [--older-than 30d]`` (V5; see ``garrison.backup.prune``).

The backup key is ``GARRISON_BACKUP_KEY``, or (when unset) one derived from
``SECRET_ENCRYPTION_KEY`` for this purpose only. Set ``GARRISON_BACKUP_KEY`` explicitly if backups
must outlive a rotation of the vault key. A backup holds vault ciphertexts and sealed signing keys
as they are stored: restoring them needs the same ``SECRET_ENCRYPTION_KEY`` (and old keys) and
``GARRISON_KEYRING_KEY`` on the target.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn

from garrison.app import Services, open_migrator_database, vault_secret
from garrison.audit.event import AuditEvent
from garrison.audit.writer import chain_head
from garrison.backup import backup_key, create_backup, restore_backup
from garrison.backup.prune import Progress as PruneProgress
from garrison.backup.prune import prune as prune_backups
from garrison.cli.context import state
from garrison.cli.output import emit, err, errors_as_exit, fail, out
from garrison.cli.users import cli_actor
from garrison.config.checks import secret_problem
from garrison.config.settings import duration_seconds
from garrison.errors import ConfigError

app = typer.Typer(help="Backups: create (encrypted) and restore.", no_args_is_help=True)
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
FileArg = Annotated[Path, typer.Argument(help="The backup file.", dir_okay=False)]


class _Bars:
    """Rows per table on stderr (rich), one bar per table; nothing with --json."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.task: TaskID | None = None

    def table(self, name: str, total: int) -> None:
        self.task = self.progress.add_task(name, total=total)

    def rows(self, count: int) -> None:
        if self.task is not None:
            self.progress.advance(self.task, count)


def _progress(as_json: bool) -> Progress:
    columns = (TextColumn("{task.description:>20}"), BarColumn(), MofNCompleteColumn())
    return Progress(*columns, console=err, disable=as_json)


def _master_key(svc: Services) -> bytes:
    """``GARRISON_BACKUP_KEY`` (as strong as any secret in production), else from the vault key."""
    configured = svc.settings.backup_key
    if configured is None:
        return backup_key(vault_secret(svc.settings))
    value = configured.get_secret_value()
    problem = secret_problem("GARRISON_BACKUP_KEY", value) if svc.settings.production else None
    if problem:
        raise ConfigError([problem])
    return backup_key(value)


def _audit(svc: Services, action: str, **details: object) -> None:
    svc.audit.record_sync(
        AuditEvent(action=action, outcome="success", actor=cli_actor(), details=details)
    )


@app.command("create")
def create(ctx: typer.Context, file: FileArg, as_json: JsonOpt = False) -> None:
    """Write an encrypted backup of every table to FILE (refused if FILE exists)."""
    svc = state(ctx).services()
    with errors_as_exit(as_json):
        master = _master_key(svc)
        with _progress(as_json) as bar:
            counts = create_backup(svc.db, file, master, reporter=_Bars(bar), now=svc.clock())
    _audit(svc, "admin.backup.create", file=str(file), rows=sum(counts.values()))
    summary = {"file": str(file), "bytes": file.stat().st_size, "tables": counts}
    emit(
        summary,
        as_json,
        lambda: out.print(f"backup written to {file}: {sum(counts.values())} rows"),
    )


def _restart_audit_head(svc: Services) -> None:
    """The restored log is the log now: its head file restarts from the restored head (L7)."""
    head = svc.audit_seal.head
    if head is None:
        return
    with svc.db.begin() as conn:
        seq, hash_ = chain_head(conn)
    head.reset(seq, hash_)


@app.command("restore")
def restore(
    ctx: typer.Context,
    file: FileArg,
    force: Annotated[
        bool, typer.Option("--force", help="Replace the contents of a non-empty database.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Restore FILE into an empty database, after verifying all of it; nothing is written
    unless the whole file is intact. Runs as the migrator (GARRISON_MIGRATOR_DATABASE_URL)."""
    svc = state(ctx).services()
    with errors_as_exit(as_json):
        master = _master_key(svc)
        owner = open_migrator_database(svc.settings)
        try:
            with _progress(as_json) as bar:
                contents = restore_backup(owner, file, master, force=force, reporter=_Bars(bar))
        finally:
            if owner is not svc.db:
                owner.dispose()
        _restart_audit_head(svc)
    _audit(svc, "admin.backup.restore", file=str(file), forced=force, tables=contents.tables)
    summary = {
        "file": str(file),
        "source_dialect": contents.header.fields.get("source_dialect"),
        "created_at": contents.header.fields.get("created_at"),
        "tables": contents.tables,
    }
    emit(
        summary,
        as_json,
        lambda: out.print(f"restored {sum(contents.tables.values())} rows from {file}"),
    )


class _PruneBars(PruneProgress):
    """Files judged, then files deleted, on stderr; nothing with --json."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.task: TaskID | None = None

    def scanning(self, total: int) -> None:
        self.task = self.progress.add_task("judging", total=total)

    def scanned(self) -> None:
        if self.task is not None:
            self.progress.advance(self.task)

    def deleting(self, total: int) -> None:
        self.task = self.progress.add_task("deleting", total=total)

    def deleted(self) -> None:
        self.scanned()


@app.command("prune")
def prune(
    ctx: typer.Context,
    directory: Annotated[
        Path, typer.Argument(help="The directory of backups.", file_okay=False, exists=True)
    ],
    keep: Annotated[
        int | None, typer.Option("--keep", min=1, help="Keep the newest N backups.")
    ] = None,
    older_than: Annotated[
        str | None,
        typer.Option("--older-than", help="Delete backups older than this (30d, 12h, seconds)."),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would be deleted; delete nothing.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Delete old Garrison backups in DIR: those neither --keep N (the newest N) nor
    --older-than (their age, from each backup's own header) keeps. Any other file is left alone.
    Exit 1 if a backup could not be deleted, 2 for a usage error."""
    if keep is None and older_than is None:
        fail("give --keep N, --older-than DURATION, or both", (), as_json, code=2)
    age: int | None = None
    if older_than is not None:
        age = duration_seconds(older_than)
        if age is None:
            fail(
                f"--older-than {older_than!r}: a positive duration such as 30d, 12h or 3600",
                (),
                as_json,
                code=2,
            )
    svc = state(ctx).services()
    with errors_as_exit(as_json), _progress(as_json) as bar:
        report = prune_backups(
            directory,
            keep=keep,
            older_than=age,
            now=svc.clock(),
            dry_run=dry_run,
            progress=_PruneBars(bar),
        )
    if not dry_run:
        svc.audit.record_sync(
            AuditEvent(
                action="admin.backup.prune",
                outcome="failure" if report.failed else "success",
                actor=cli_actor(),
                details={
                    "directory": str(directory),
                    "keep": keep,
                    "older_than": age,
                    "deleted": [str(b.path.name) for b in report.deleted],
                    "kept": len(report.kept),
                    "failed": len(report.failed),
                },
            )
        )
    data = report.as_dict()

    def human() -> None:
        verb = "would delete" if dry_run else "deleted"
        for backup in report.deleted:
            out.print(f"{verb} {backup.path}")
        for path, reason in report.skipped:
            out.print(f"left alone {path}: {reason}")
        out.print(
            f"{verb} {len(report.deleted)} backup(s), kept {len(report.kept)}"
            f" ({data['freed_bytes']} bytes)"
        )

    emit(data, as_json, human)
    if report.failed:  # the report above lists them; with --json under "failed"
        if not as_json:
            err.print(f"[bold red]error:[/] {len(report.failed)} backup(s) could not be deleted")
            for path, reason in report.failed:
                err.print(f"  - {path}: {reason}")
        raise typer.Exit(1)
