"""Files that hold Garrison's data are the owner's only (C6): 0600, in directories made 0700.

Whatever the umask: a database, an audit copy, an export or a backup is as sensitive as the secrets
in it. A file that already exists with wider permissions is narrowed when Garrison opens it.
"""

from __future__ import annotations

import os
from pathlib import Path

FILE_MODE = 0o600
DIR_MODE = 0o700


def private_dir(path: Path) -> Path:
    """Create ``path`` and any missing parents 0700 (existing directories are left as they are)."""
    missing = []
    for candidate in (path, *path.parents):
        if candidate.exists():
            break
        missing.append(candidate)
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=DIR_MODE)
        except FileExistsError:
            pass
        else:
            os.chmod(directory, DIR_MODE)  # mkdir's mode is filtered by the umask
    return path


def open_private(path: Path, flags: int) -> int:
    """``os.open`` with ``O_CREAT``, the file 0600 whether it is new or was wider before."""
    fd = os.open(path, flags | os.O_CREAT, FILE_MODE)
    try:
        if os.fstat(fd).st_mode & 0o077:
            os.fchmod(fd, FILE_MODE)
    except BaseException:
        os.close(fd)
        raise
    return fd


def tighten(path: Path) -> None:
    """Narrow an existing file to 0600 (a SQLite side file made before this version)."""
    if path.exists() and path.stat().st_mode & 0o077:
        path.chmod(FILE_MODE)
