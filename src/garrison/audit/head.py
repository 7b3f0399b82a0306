"""The audit chain's head, kept outside the database (L7): what catches a log cut short.

A hash chain, keyed or not, cannot show that records were cut off its *end*: what is left is a
perfectly good shorter chain. So the writer keeps ``{seq, hash}`` of the newest record it committed
in a small file (``GARRISON_AUDIT_HEAD_PATH``, by default ``audit-head.json`` in the data dir),
MACed with the audit key, and ``garrison audit verify`` / ``GET /admin/audit/verify`` check that
the log still reaches that record, with that hash.

Threat model. The attacker holds the database (SQL as app_rw, the migrator or a superuser: they
can edit, delete, re-insert, rewrite and re-hash rows, drop triggers, roll tables back to an old
copy) but not the host's secrets or files (the audit key, this file). Then:

- an edited, inserted, reordered or deleted record, or a rewrite re-chained after it, fails its
  HMAC or its link (``garrison.audit.chain``);
- records cut off the end leave the log short of this file's head: "cut short";
- a cut followed by new records (the service goes on writing) leaves different records where the
  head was: "history was rewritten". The writer checks, before it moves the head, that the head it
  is about to replace is still in the log, and leaves the file alone when it is not, so the
  evidence stays until someone verifies;
- the file cannot be forged or moved back from the database: it is not there, and its MAC needs
  the audit key.

What it does not cover: an attacker who also controls the host (holds the audit key and this file)
can rewrite anything; records written in the last moments before a cut, when the writer is under
load (it moves the head at most once a second while records keep coming, and at once when it goes
idle); and several replicas on separate hosts each keep their own file, which vouches for what that
replica last saw. Shipping ``AUDIT_LOG_PATH`` off the host, or a head passed to ``verify --anchor``,
covers those. A database replaced on purpose (restored from a backup, recreated in development)
no longer reaches the file's head: ``garrison backup restore`` moves the head to the restored log;
otherwise remove the file.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from garrison.audit.chain import ChainKey

#: While records keep coming, the head moves at most this often (seconds); idle, at once.
MIN_INTERVAL = 1.0


@dataclass(frozen=True, slots=True)
class Head:
    seq: int
    hash: str
    written_at: float


class HeadFileError(Exception):
    """The head file exists but cannot be trusted (unreadable, altered, or another key's)."""


class HeadFile:
    """The MACed ``{seq, hash}`` of the newest committed record, replaced atomically."""

    def __init__(self, path: Path, key: ChainKey, *, min_interval: float = MIN_INTERVAL) -> None:
        self.path = path
        self.key = key
        self.min_interval = min_interval
        self._last_write = 0.0

    def _payload(self, seq: int, hash_: str, written_at: float) -> dict[str, object]:
        return {"seq": seq, "hash": hash_, "written_at": repr(float(written_at))}

    def read(self) -> Head | None:
        """The head last written; None when there is no file yet. ``HeadFileError`` if not sound."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise HeadFileError(f"audit head file {self.path}: {exc.strerror}") from None
        try:
            data = json.loads(text)
            head = Head(int(data["seq"]), str(data["hash"]), float(data["written_at"]))
        except (ValueError, TypeError, KeyError):
            raise HeadFileError(f"audit head file {self.path} is not a head record") from None
        payload = self._payload(head.seq, head.hash, head.written_at)
        if not self.key.sealed("head", payload, data.get("mac")):
            raise HeadFileError(
                f"audit head file {self.path} does not verify under GARRISON_AUDIT_KEY "
                "(altered, or written with another key)"
            )
        return head

    def due(self, idle: bool, now: float | None = None) -> bool:
        """Whether the next batch should move the head: always when idle, else once a second."""
        return idle or (now if now is not None else time.monotonic()) - self._last_write >= (
            self.min_interval
        )

    def advance(self, seq: int, hash_: str) -> bool:
        """Move the head forward to ``(seq, hash_)``; never back (another process may be ahead)."""
        with self._locked():
            try:
                current = self.read()
            except HeadFileError:
                return False  # never overwrite the evidence
            if current is not None and current.seq >= seq:
                self._last_write = time.monotonic()
                return False
            self._write(seq, hash_)
        return True

    def reset(self, seq: int, hash_: str) -> None:
        """Point the head at ``(seq, hash_)`` whatever it said (a restore the operator chose)."""
        with self._locked():
            self._write(seq, hash_)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(f"{self.path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # the service's workers and the CLI share the file
            yield
        finally:
            os.close(fd)

    def _write(self, seq: int, hash_: str) -> None:
        now = time.time()
        mac = self.key.seal("head", self._payload(seq, hash_, now))
        record = {"seq": seq, "hash": hash_, "written_at": now, "mac": mac}
        data = (json.dumps(record, sort_keys=True) + "\n").encode()
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        self._last_write = time.monotonic()


@dataclass(frozen=True, slots=True)
class AuditSeal:
    """What vouches for the chain from outside the database: the audit key and the head file."""

    key: ChainKey
    head: HeadFile | None = None
