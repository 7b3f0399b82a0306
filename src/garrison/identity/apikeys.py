"""API keys (A7): ``gk_<lookup>_<secret>``, shown once, stored as SHA-256, scoped, expiring.

A key made without a lifetime gets the store's default (``GARRISON_API_KEY_TTL``, 90 days), and its
public form carries ``rotate_by``: the date a replacement must be in place (C5). A key from before
that default (no expiry) is due ``default_ttl`` after it was made; ``garrison doctor`` names it.

The lookup part finds the row; the secret is compared in constant time against its hash. A key is
bound to its user: a disabled user's keys stop working with the user.
"""

from __future__ import annotations

import hmac
import re
import secrets
import unicodedata
import uuid
from dataclasses import KW_ONLY, dataclass
from typing import Any

import sqlalchemy as sa

from garrison.clock import Clock, system_clock
from garrison.errors import AuthenticationError, NotFoundError, ValidationError
from garrison.identity.digest import token_hash
from garrison.plain import fields_dict
from garrison.storage.bus import InvalidationBus
from garrison.storage.db import Database
from garrison.storage.schema import api_keys
from garrison.text import check_text, control_character

PREFIX = "gk_"
_KEY_RE = re.compile(r"^gk_([A-Za-z0-9]{12})_([A-Za-z0-9_-]{43})$")
_SCOPE_RE = re.compile(r"^[a-z*][a-z0-9_.:*-]{0,99}$")
#: control, format (bidi overrides) and lone surrogates: nothing a name needs
_CONTROL = frozenset({"Cc", "Cf", "Cs"})
_DURATION_RE = re.compile(r"^(\d+)([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> int:
    """``90d`` -> seconds; ``s m h d w`` units."""
    match = _DURATION_RE.match(text.strip())
    if not match or int(match.group(1)) == 0:
        raise ValidationError(f"duration {text!r}: use a number and s, m, h, d or w (e.g. 90d)")
    return int(match.group(1)) * _UNITS[match.group(2)]


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: str
    user_id: str
    name: str
    scopes: tuple[str, ...]
    tenant: str | None
    created_at: float
    expires_at: float | None
    revoked_at: float | None
    rotate_by: float

    def public(self) -> dict[str, Any]:
        return fields_dict(self)


#: Lifetime of a key made without one, unless the store is given another (GARRISON_API_KEY_TTL).
DEFAULT_TTL = 90 * 86400


def _key(row: Any, default_ttl: int = DEFAULT_TTL) -> ApiKey:
    return ApiKey(
        row.id,
        row.user_id,
        row.name,
        tuple(row.scopes or ()),
        row.tenant,
        row.created_at,
        row.expires_at,
        row.revoked_at,
        row.expires_at if row.expires_at is not None else row.created_at + default_ttl,
    )


@dataclass(eq=False, repr=False)
class ApiKeyStore:
    db: Database
    bus: InvalidationBus
    clock: Clock = system_clock
    _: KW_ONLY
    default_ttl: int = DEFAULT_TTL

    def create(
        self,
        user_id: str,
        scopes: tuple[str, ...],
        *,
        tenant: str | None,
        name: str = "",
        expires_in: int | None = None,
    ) -> tuple[str, ApiKey]:
        """Returns (the key, shown this once; its record)."""
        if not scopes:
            raise ValidationError("an API key needs at least one scope")
        check_text("name", name, tab=True, max_length=200)
        for scope in scopes:
            if not _SCOPE_RE.fullmatch(check_text("scope", scope)):
                raise ValidationError(f"scope {scope!r}: lower-case letters, digits, '.:_-*'")
        if any(unicodedata.category(ch) in _CONTROL and ch != "\t" for ch in name):
            # format characters (a right-to-left override) would disguise a listing in a terminal;
            # controls were refused above (``check_text``: the one validator, which allows a tab)
            raise ValidationError("name: printable characters only (no control characters)")
        lookup = "".join(
            secrets.choice("ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789")
            for _ in range(12)
        )
        secret = secrets.token_urlsafe(32)
        now = self.clock()
        key_id = str(uuid.uuid4())
        with self.db.begin() as conn:
            conn.execute(
                api_keys.insert().values(
                    id=key_id,
                    lookup=lookup,
                    key_hash=token_hash(secret),
                    user_id=user_id,
                    name=name,
                    scopes=sorted(set(scopes)),
                    tenant=tenant,
                    created_at=now,
                    expires_at=now + (expires_in or self.default_ttl),
                )
            )
        return f"{PREFIX}{lookup}_{secret}", self.get(key_id)

    def get(self, key_id: str) -> ApiKey:
        row = None
        if not control_character(key_id):  # no key has such an id (PostgreSQL refuses NUL)
            with self.db.begin() as conn:
                row = conn.execute(sa.select(api_keys).where(api_keys.c.id == key_id)).first()
        if row is None:
            raise NotFoundError("no such API key")
        return _key(row, self.default_ttl)

    def list_for(self, user_id: str) -> list[ApiKey]:
        with self.db.begin() as conn:
            rows = conn.execute(
                sa.select(api_keys)
                .where(api_keys.c.user_id == user_id)
                .order_by(api_keys.c.created_at)
            )
            return [_key(r, self.default_ttl) for r in rows]

    def authenticate(self, presented: str) -> ApiKey:
        """The live key behind ``presented``; one opaque 401 for every failure."""
        match = _KEY_RE.match(presented)
        if not match:
            raise AuthenticationError("invalid API key", code="invalid_api_key")
        lookup, secret = match.groups()
        with self.db.begin() as conn:
            row = conn.execute(sa.select(api_keys).where(api_keys.c.lookup == lookup)).first()
        expected = row.key_hash if row else token_hash("")
        if not hmac.compare_digest(expected, token_hash(secret)) or row is None:
            raise AuthenticationError("invalid API key", code="invalid_api_key")
        key = _key(row, self.default_ttl)
        if key.revoked_at is not None or (key.expires_at and key.expires_at <= self.clock()):
            raise AuthenticationError("invalid API key", code="invalid_api_key")
        return key

    def touch(self, key_id: str) -> None:
        with self.db.begin() as conn:
            conn.execute(
                sa.update(api_keys).where(api_keys.c.id == key_id).values(last_used_at=self.clock())
            )

    def revoke(self, key_id: str) -> ApiKey:
        with self.db.begin() as conn:
            result = conn.execute(
                sa.update(api_keys)
                .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=self.clock())
            )
        key = self.get(key_id)
        if result.rowcount:
            self.bus.publish("apikey", key_id)
        return key
