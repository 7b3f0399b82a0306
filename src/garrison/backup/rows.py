"""Rows as JSON, portably: the same backup restores into SQLite or PostgreSQL (O1).

Values are what SQLAlchemy returns, so the dialect never shows: floats keep their exact text (the
audit chain hashes ``repr(ts)``), JSON columns stay JSON, and only binary columns need an encoding
(base64). Which columns are binary comes from the table definition, never from the data, so no
value can be mistaken for an encoded one.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from garrison.backup.container import BackupError


@dataclass(frozen=True, slots=True)
class TableCodec:
    table: sa.Table
    columns: tuple[str, ...]
    binary: frozenset[int]  # positions of LargeBinary columns

    @classmethod
    def for_table(cls, table: sa.Table, columns: Sequence[str] | None = None) -> TableCodec:
        names = tuple(columns) if columns is not None else tuple(c.name for c in table.columns)
        unknown = [n for n in names if n not in table.c]
        if unknown:
            raise BackupError(
                f"backup table {table.name!r} has columns this schema lacks: {', '.join(unknown)}"
            )
        binary = frozenset(
            i for i, n in enumerate(names) if isinstance(table.c[n].type, sa.LargeBinary)
        )
        return cls(table, names, binary)

    def encode(self, row: Sequence[Any]) -> list[Any]:
        return [
            base64.b64encode(v).decode() if i in self.binary and v is not None else v
            for i, v in enumerate(row)
        ]

    def decode(self, values: Any) -> dict[str, Any]:
        if not isinstance(values, list) or len(values) != len(self.columns):
            raise BackupError(f"backup row of {self.table.name!r} does not match its columns")
        out: dict[str, Any] = {}
        for i, (name, raw) in enumerate(zip(self.columns, values, strict=True)):
            value = raw
            if i in self.binary and raw is not None:
                try:
                    value = base64.b64decode(raw, validate=True)
                except (binascii.Error, TypeError, ValueError):
                    raise BackupError(
                        f"backup column {self.table.name}.{name} is corrupt"
                    ) from None
            out[name] = value
        return out
