"""A record's fields as plain data, the one way the stores' results become JSON (API, CLI)."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import fields
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from _typeshed import DataclassInstance


def fields_dict(record: DataclassInstance, *, without: Collection[str] = ()) -> dict[str, Any]:
    """The fields of ``record`` in declaration order, but those named in ``without``; a tuple or
    list becomes a new list (never the record's own), any other value is kept as it is."""
    return {
        f.name: _plain(getattr(record, f.name)) for f in fields(record) if f.name not in without
    }


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple | list) else value
