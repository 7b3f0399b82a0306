"""The hash chain (L7): each record's hash covers its content and the previous record's hash."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

GENESIS = "0" * 64

#: The columns a record's hash covers, in order. Changing this list breaks every existing chain.
HASHED_FIELDS: tuple[str, ...] = (
    "seq",
    "ts",
    "action",
    "actor",
    "tenant",
    "ip",
    "user_agent",
    "outcome",
    "reason",
    "request_id",
    "details",
)


def canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def record_hash(record: Mapping[str, Any], prev_hash: str) -> str:
    body = {name: record.get(name) for name in HASHED_FIELDS}
    body["ts"] = repr(float(record["ts"]))  # exact float text, portable across databases
    return hashlib.sha256(prev_hash.encode() + b"\n" + canonical(body)).hexdigest()
