"""The hash chain (L7): each record's hash covers its content and the previous record's hash.

Since revision 0003 the hash is an HMAC-SHA-256 under the audit key (``GARRISON_AUDIT_KEY``), which
is never stored in the database: whoever can only write the database can edit a record, but cannot
compute the hash that would make the edit (or a re-chained rewrite of everything after it) verify.
Records written before the switch keep their plain SHA-256 hashes (``legacy_hash``); a signed
marker in ``audit_epochs`` says where the keyed chain starts (``garrison.audit.epochs``).
"""

from __future__ import annotations

import hashlib
import hmac
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

_RECORD_LABEL = b"garrison-audit-record-v2\n"


def canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _body(record: Mapping[str, Any], prev_hash: str) -> bytes:
    body = {name: record.get(name) for name in HASHED_FIELDS}
    body["ts"] = repr(float(record["ts"]))  # exact float text, portable across databases
    return prev_hash.encode() + b"\n" + canonical(body)


def legacy_hash(record: Mapping[str, Any], prev_hash: str) -> str:
    """The unkeyed SHA-256 of records written before the keyed chain (anyone can compute it)."""
    return hashlib.sha256(_body(record, prev_hash)).hexdigest()


class ChainKey:
    """The audit key: HMACs for records, and for the markers and head file that vouch for them.

    One secret, a separate sub-key per use (so a record's MAC can never pass as a head's).
    """

    __slots__ = ("_records", "_seals")

    def __init__(self, secret: bytes) -> None:
        if len(secret) < 16:
            raise ValueError("the audit key needs at least 16 bytes")
        records = hmac.new(secret, b"garrison audit: records", hashlib.sha256).digest()
        seals = hmac.new(secret, b"garrison audit: seals", hashlib.sha256).digest()
        self._records = hmac.new(records, _RECORD_LABEL, hashlib.sha256)
        self._seals = seals

    def record_hash(self, record: Mapping[str, Any], prev_hash: str) -> str:
        mac = self._records.copy()  # the keyed state is computed once; a copy per record
        mac.update(_body(record, prev_hash))
        return mac.hexdigest()

    def seal(self, purpose: str, payload: Mapping[str, Any]) -> str:
        """A MAC over ``payload`` for ``purpose`` (e.g. the keyed chain's start, the head file)."""
        message = canonical({"purpose": f"garrison-audit-{purpose}", **payload})
        return hmac.new(self._seals, message, hashlib.sha256).hexdigest()

    def sealed(self, purpose: str, payload: Mapping[str, Any], mac: object) -> bool:
        return isinstance(mac, str) and hmac.compare_digest(self.seal(purpose, payload), mac)

    def __repr__(self) -> str:
        return "ChainKey(<secret>)"
