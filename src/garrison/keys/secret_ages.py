"""When each secret setting was first seen, so its rotation is due like a signing key's (C5).

A secret set in the environment (or ``*_FILE``, or ``garrison.toml``) has no creation date of its
own. Each start records, per setting, a fingerprint of the value and the time it was first seen
with that value; a different value is a rotation and starts the clock again. The rotate-by date is
``GARRISON_KEY_ROTATE_DAYS`` after first seen, as for signing keys; `garrison doctor` and
`garrison secrets status` report overdue ones.

The database never holds a secret, nor an unkeyed hash of one: the fingerprint is
HMAC-SHA256 under a random 256-bit key made for that row, over the setting's name and its value. It
tells only "the same value as before, or not". With the row's key, a guess can be tested offline,
so the fingerprint is no weaker than the value itself: production refuses any value below about
10^25 estimated guesses (``garrison.config.checks``), and `garrison secrets generate` gives 256 bits.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from garrison.clock import Clock, system_clock
from garrison.plain import fields_dict
from garrison.storage.db import Database
from garrison.storage.schema import secret_fingerprints

DAY = 86400.0
_CONTEXT = b"garrison secret fingerprint v1\x00"


def fingerprint(key: bytes, name: str, value: str) -> str:
    message = _CONTEXT + name.encode() + b"\x00" + value.encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def _matches(row: Any, name: str, value: str) -> bool:
    expected = fingerprint(bytes.fromhex(row.fp_key), name, value)
    return hmac.compare_digest(expected, row.fingerprint)


@dataclass(frozen=True, slots=True)
class SecretAge:
    name: str
    #: "recorded": first seen with this value; "changed": set to a value not yet recorded (the
    #: next start records it); "unrecorded": set, never seen by a start; "unset"
    state: str
    first_seen_at: float | None
    rotate_by: float | None
    overdue: bool

    def public(self) -> dict[str, Any]:
        return fields_dict(self)


class SecretAges:
    def __init__(self, db: Database, *, rotate_days: int, clock: Clock = system_clock) -> None:
        self.db = db
        self.rotate_days = rotate_days
        self.clock = clock

    def observe(self, values: Mapping[str, str]) -> None:
        """Record each value: first seen now when new or changed, else only ``last_seen_at``."""
        now = self.clock()
        for name, value in values.items():
            self._observe(name, value, now)

    def _observe(self, name: str, value: str, now: float) -> None:
        key = secrets.token_bytes(32)
        fresh = {
            "fp_key": key.hex(),
            "fingerprint": fingerprint(key, name, value),
            "first_seen_at": now,
            "last_seen_at": now,
        }
        table = secret_fingerprints
        with self.db.begin(immediate=True) as conn:
            row = conn.execute(sa.select(table).where(table.c.name == name)).first()
            if row is None:
                dialect = postgresql if self.db.is_postgres else sqlite
                conn.execute(
                    dialect.insert(table).values(name=name, **fresh).on_conflict_do_nothing()
                )
            elif _matches(row, name, value):
                conn.execute(sa.update(table).where(table.c.name == name).values(last_seen_at=now))
            else:  # rotated; compare-and-set so two starting replicas record it once
                conn.execute(
                    sa.update(table)
                    .where(table.c.name == name, table.c.fingerprint == row.fingerprint)
                    .values(**fresh)
                )

    def report(self, secrets: SecretValues) -> list[SecretAge]:
        """Every tracked setting's age, judged against this configuration's values (read-only;
        before the migration that makes the table, every set secret is unrecorded)."""
        with self.db.begin() as conn:
            rows = (
                {r.name: r for r in conn.execute(sa.select(secret_fingerprints))}
                if sa.inspect(conn).has_table(secret_fingerprints.name)
                else {}
            )
        return judge(secrets, rows, now=self.clock(), rotate_days=self.rotate_days)


@dataclass(frozen=True, slots=True)
class SecretValues:
    """The secret settings to track (in report order) and the values this configuration sets:
    built by ``garrison.config.secret_values`` from the settings, so this module never sees them."""

    names: tuple[str, ...]
    values: Mapping[str, str]


def judge(
    secrets: SecretValues, rows: Mapping[str, Any], *, now: float, rotate_days: int
) -> list[SecretAge]:
    """Ages of the tracked settings from recorded rows (name -> row)."""
    values = secrets.values
    out = []
    for name in secrets.names:
        row = rows.get(name)
        value = values.get(name)
        if value is None:
            out.append(SecretAge(name, "unset", None, None, False))
        elif row is None:
            out.append(SecretAge(name, "unrecorded", None, None, False))
        elif not _matches(row, name, value):
            out.append(SecretAge(name, "changed", None, None, False))
        else:
            due = float(row.first_seen_at) + rotate_days * DAY
            out.append(SecretAge(name, "recorded", float(row.first_seen_at), due, due <= now))
    return out
