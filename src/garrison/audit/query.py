"""Reading the audit log (L4, L5): filters, the ready-made queries, and streaming export.

One filter type serves ``GET /admin/audit``, ``garrison audit query`` and ``garrison audit export``,
so the three can never disagree on what a filter means.
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Literal, TextIO

import sqlalchemy as sa

from garrison.audit.chain import HASHED_FIELDS
from garrison.errors import ValidationError
from garrison.storage.db import Database
from garrison.storage.schema import audit_log
from garrison.text import check_text

OUTCOMES = ("success", "failure", "deny", "error")
PRESETS = ("admin-actions", "failed-logins", "actor")
MAX_LIMIT = 1000
DAY = 86400.0
_RELATIVE = re.compile(r"^(\d{1,7})([smhdw])$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_PAGE = 2000

Format = Literal["jsonl", "csv"]
#: The columns of an exported record, in order (CSV header; JSON-lines keys): what the chain hashes
#: (``time`` is ``ts`` readable), then the links, so an export can be re-verified on its own.
COLUMNS = ("seq", "time", *HASHED_FIELDS[1:], "prev_hash", "hash")


@dataclass(frozen=True, slots=True)
class AuditFilter:
    """What to select. ``action`` ending in ``.`` or ``*`` is a prefix (``admin.`` = every admin action)."""

    action: str | None = None
    actor: str | None = None
    tenant: str | None = None
    outcome: str | None = None
    outcomes: tuple[str, ...] = ()
    since: float | None = None
    until: float | None = None
    limit: int | None = 100

    def __post_init__(self) -> None:
        for name in ("action", "actor", "tenant"):
            value = getattr(self, name)
            # PostgreSQL refuses NUL in text (a 500, not an empty answer); no column is wider
            if value is not None:
                check_text(name, value, max_length=400)
        if self.outcome is not None and self.outcome not in OUTCOMES:
            raise ValidationError(
                "unknown outcome", reasons=[f"outcome: one of {', '.join(OUTCOMES)}"]
            )
        if self.limit is not None and not 1 <= self.limit <= MAX_LIMIT:
            raise ValidationError("bad limit", reasons=[f"limit: between 1 and {MAX_LIMIT}"])


def preset(name: str, now: float, *, actor: str | None = None) -> AuditFilter:
    """The ready-made queries of L4."""
    if name == "admin-actions":
        return AuditFilter(action="admin.")
    if name == "failed-logins":
        return AuditFilter(action="auth.login", outcomes=("failure", "deny"), since=now - DAY)
    if name == "actor":
        if not actor:
            raise ValidationError("the actor preset needs an actor", reasons=["actor: required"])
        return AuditFilter(actor=actor)
    raise ValidationError("unknown preset", reasons=[f"preset: one of {', '.join(PRESETS)}"])


_TIME_FORMS = "{name}: use 24h, 7d, 2026-01-31T12:00:00Z or UNIX s"


def parse_time(text: str, now: float, *, name: str = "time") -> float:
    """``24h``/``7d`` ago, ISO 8601 (naive means UTC), or UNIX seconds."""
    value = text.strip()
    relative = _RELATIVE.match(value)
    if relative:
        return now - int(relative.group(1)) * _UNIT[relative.group(2)]
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        if math.isfinite(seconds):  # ``nan``, ``inf`` and ``1e400`` are no time at all
            return seconds
        raise ValidationError(f"{name}: not a time", reasons=[_TIME_FORMS.format(name=name)])
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValidationError(
            f"{name}: not a time", reasons=[_TIME_FORMS.format(name=name)]
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def parse_age(text: str) -> float:
    """``90d``, ``12h``: a duration in seconds (retention)."""
    match = _RELATIVE.match(text.strip())
    if not match or int(match.group(1)) == 0:
        raise ValidationError("not a duration", reasons=["use a number and s/m/h/d/w, e.g. 90d"])
    return float(int(match.group(1)) * _UNIT[match.group(2)])


def _like_prefix(prefix: str) -> str:
    for special in ("\\", "%", "_"):
        prefix = prefix.replace(special, "\\" + special)
    return prefix + "%"


def _where(f: AuditFilter) -> list[sa.ColumnElement[bool]]:
    c = audit_log.c
    clauses: list[sa.ColumnElement[bool]] = []
    if f.action:
        if f.action.endswith(("*", ".")):
            clauses.append(c.action.like(_like_prefix(f.action.rstrip("*")), escape="\\"))
        else:
            clauses.append(c.action == f.action)
    for column, value in ((c.actor, f.actor), (c.tenant, f.tenant), (c.outcome, f.outcome)):
        if value is not None:
            clauses.append(column == value)
    if f.outcomes:
        clauses.append(c.outcome.in_(f.outcomes))
    if f.since is not None:
        clauses.append(c.ts >= f.since)
    if f.until is not None:
        clauses.append(c.ts < f.until)
    return clauses


def search(db: Database, f: AuditFilter) -> list[dict[str, Any]]:
    """The newest matching records first, at most ``limit``."""
    query = sa.select(audit_log).where(*_where(f)).order_by(audit_log.c.seq.desc())
    if f.limit is not None:
        query = query.limit(f.limit)
    with db.begin() as conn:
        return [public(row._asdict()) for row in conn.execute(query)]


def count(db: Database, f: AuditFilter) -> int:
    query = sa.select(sa.func.count()).select_from(audit_log).where(*_where(f))
    with db.begin() as conn:
        return int(conn.execute(query).scalar_one())


def stream(db: Database, f: AuditFilter) -> Iterator[dict[str, Any]]:
    """Every matching record, oldest first, a page at a time (no limit; memory stays flat)."""
    after = 0
    while True:
        query = (
            sa.select(audit_log)
            .where(*_where(f), audit_log.c.seq > after)
            .order_by(audit_log.c.seq)
            .limit(_PAGE)
        )
        with db.begin() as conn:
            page = [row._asdict() for row in conn.execute(query)]
        for row in page:
            yield public(row)
        if len(page) < _PAGE:
            return
        after = int(page[-1]["seq"])


def public(row: dict[str, Any]) -> dict[str, Any]:
    """A record as shown and exported: the stored columns plus a readable UTC ``time``."""
    moment = datetime.fromtimestamp(float(row["ts"]), UTC)
    return {name: row.get(name) for name in COLUMNS} | {
        "time": moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    }


def export(
    db: Database,
    f: AuditFilter,
    out: TextIO,
    fmt: Format,
    progress: Callable[[int], None] = lambda _n: None,
) -> int:
    """Write every matching record to ``out``; ``progress`` gets the running count. Returns it."""
    f = replace(f, limit=None)
    writer = csv.DictWriter(out, fieldnames=COLUMNS) if fmt == "csv" else None
    if writer is not None:
        writer.writeheader()
    written = 0
    for record in stream(db, f):
        if writer is not None:
            writer.writerow({**record, "details": json.dumps(record["details"], sort_keys=True)})
        else:
            out.write(json.dumps(record, sort_keys=True) + "\n")
        written += 1
        if written % 500 == 0:
            progress(written)
    progress(written)
    return written
