"""Backup retention (O1, V5): ``garrison backup prune DIR [--keep N] [--older-than 30d]``.

A retention policy keeps the newest ``keep`` backups, or those younger than ``older_than``
seconds; with both, a backup is deleted only when neither keeps it. Age is the ``created_at`` of
the backup's own header (the moment of its snapshot), not the file's modification time, which a
copy resets.

Only Garrison backups are ever touched: regular files directly in DIR (no recursion, no symbolic
links) that start with the container's magic and carry a readable header of a known format
(``container.peek_header``; no key is needed, so backups made under an earlier key are pruned as
well). Everything else is listed as skipped and left alone, and so is a backup still being
written (``create_backup``'s hidden ``.NAME.PID.tmp``). A file is deleted only if it is still the
file that was judged (same device and inode), so a file swapped in meanwhile is not removed.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from garrison.backup.container import BackupError, peek_header
from garrison.errors import ValidationError


@dataclass(frozen=True, slots=True)
class BackupFile:
    path: Path
    created_at: float
    size: int
    identity: tuple[int, int]  # (st_dev, st_ino) when judged

    def as_dict(self) -> dict[str, Any]:
        return {"file": str(self.path), "created_at": self.created_at, "bytes": self.size}


@dataclass(slots=True)
class PruneReport:
    directory: Path
    dry_run: bool
    kept: list[BackupFile] = field(default_factory=list)
    deleted: list[BackupFile] = field(default_factory=list)  # or, in a dry run, would be
    skipped: list[tuple[Path, str]] = field(default_factory=list)  # not backups: untouched
    failed: list[tuple[Path, str]] = field(default_factory=list)  # could not be deleted

    def as_dict(self) -> dict[str, Any]:
        return {
            "directory": str(self.directory),
            "dry_run": self.dry_run,
            "kept": [b.as_dict() for b in self.kept],
            "deleted": [b.as_dict() for b in self.deleted],
            "skipped": [{"file": str(p), "reason": r} for p, r in self.skipped],
            "failed": [{"file": str(p), "reason": r} for p, r in self.failed],
            "freed_bytes": sum(b.size for b in self.deleted),
        }


class Progress:
    """What a long run reports: files judged, then files deleted."""

    def scanning(self, total: int) -> None:
        pass

    def scanned(self) -> None:
        pass

    def deleting(self, total: int) -> None:
        pass

    def deleted(self) -> None:
        pass


def _is_temporary(name: str) -> bool:
    """A backup still being written by ``create_backup`` (``.NAME.PID.tmp``)."""
    return name.startswith(".") and name.endswith(".tmp")


def judge(path: Path) -> BackupFile | str:
    """The backup at ``path``, or why it is not one (and so is left alone)."""
    try:
        info = path.lstat()
    except OSError as exc:
        return f"cannot read: {exc.strerror}"
    if stat.S_ISLNK(info.st_mode):
        return "a symbolic link"
    if not stat.S_ISREG(info.st_mode):
        return "not a regular file"
    if _is_temporary(path.name):
        return "a backup still being written"
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError as exc:
        return f"cannot read: {exc.strerror}"
    with os.fdopen(fd, "rb") as src:
        opened = os.fstat(src.fileno())
        try:
            header, *_ = peek_header(src)
        except BackupError as exc:
            return f"not a Garrison backup: {exc.detail}"
    created = header.fields.get("created_at")
    if isinstance(created, bool) or not isinstance(created, int | float):
        return "not a Garrison backup: its header has no creation time"
    return BackupFile(path, float(created), opened.st_size, (opened.st_dev, opened.st_ino))


def select(
    backups: list[BackupFile], *, keep: int | None, older_than: float | None, now: float
) -> tuple[list[BackupFile], list[BackupFile]]:
    """(kept, to delete), newest first: a backup goes when no given rule keeps it."""
    if keep is None and older_than is None:
        raise ValidationError("give --keep N, --older-than DURATION, or both")
    if keep is not None and keep < 1:
        raise ValidationError("--keep: at least 1")
    ordered = sorted(backups, key=lambda b: (b.created_at, b.path.name), reverse=True)
    kept: list[BackupFile] = []
    doomed: list[BackupFile] = []
    for rank, backup in enumerate(ordered):
        by_count = keep is not None and rank < keep
        by_age = older_than is not None and backup.created_at >= now - older_than
        (kept if by_count or by_age else doomed).append(backup)
    return kept, doomed


def prune(
    directory: Path,
    *,
    keep: int | None = None,
    older_than: float | None = None,
    now: float,
    dry_run: bool = False,
    progress: Progress | None = None,
) -> PruneReport:
    """Apply the retention policy to the backups directly in ``directory``."""
    if keep is None and older_than is None:
        raise ValidationError("give --keep N, --older-than DURATION, or both")
    report = PruneReport(directory, dry_run)
    shown = progress or Progress()
    try:
        entries = sorted(directory.iterdir())
    except OSError as exc:
        raise ValidationError(f"{directory}: cannot list: {exc.strerror}") from None
    shown.scanning(len(entries))
    backups = []
    for entry in entries:
        judged = judge(entry)
        if isinstance(judged, str):
            report.skipped.append((entry, judged))
        else:
            backups.append(judged)
        shown.scanned()
    report.kept, doomed = select(backups, keep=keep, older_than=older_than, now=now)
    if dry_run:
        report.deleted = doomed
        return report
    shown.deleting(len(doomed))
    for backup in doomed:
        problem = _delete(backup)
        if problem is None:
            report.deleted.append(backup)
        else:
            report.failed.append((backup.path, problem))
        shown.deleted()
    return report


def _delete(backup: BackupFile) -> str | None:
    try:
        now = backup.path.lstat()
    except FileNotFoundError:
        return "gone before it could be deleted"
    except OSError as exc:
        return exc.strerror or type(exc).__name__
    if (now.st_dev, now.st_ino) != backup.identity or not stat.S_ISREG(now.st_mode):
        return "replaced since it was judged; left alone"
    try:
        os.unlink(backup.path)
    except OSError as exc:
        return exc.strerror or type(exc).__name__
    return None
