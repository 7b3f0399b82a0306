"""Helpers for the token and key suites: a fake clock, keyrings on a real database, hand-made JWS.

Forged tokens are built here by hand (base64url + JSON + a chosen signer) so an attack test controls
every byte; nothing in here goes through ``TokenCodec``, the code under test.
"""

from __future__ import annotations

import atexit
import json
import secrets
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from garrison.keys.algorithms import b64url
from garrison.keys.keyring import Keyring
from garrison.storage import migrate
from garrison.storage.db import Database
from garrison.tokens.jwt import TokenCodec

ISSUER = "https://auth.example.test"
AUDIENCE = "garrison-tests"
TTL = 900
SKEW = 30
KEK = bytes(range(32))
T0 = 1_800_000_000.0


class FakeClock:
    """A clock that moves only when told to."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


_MIGRATED: list[Path] = []


def _migrated_sqlite() -> Path:
    """An SQLite file migrated to head, made once per process (a copy costs far less than the
    migrations: hundreds of tests in these suites start from one)."""
    if not _MIGRATED:
        folder = Path(tempfile.mkdtemp(prefix="garrison-migrated-"))
        atexit.register(shutil.rmtree, folder, True)
        db = Database(f"sqlite:///{folder / 'migrated.db'}")
        try:
            migrate.upgrade(db)
        finally:
            db.dispose()
        _MIGRATED.append(folder / "migrated.db")
    return _MIGRATED[0]


def open_db(url: str) -> Database:
    """A database migrated to head: a new SQLite file starts as a copy of one migrated once."""
    path = Path(url.removeprefix("sqlite:///"))
    if url.startswith("sqlite:///") and not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(_migrated_sqlite(), path)
        return Database(url)  # at head already
    db = Database(url)
    migrate.upgrade(db)
    return db


def make_keyring(db: Database, clock: FakeClock, alg: str = "RS256", **kw: Any) -> Keyring:
    keyring = Keyring(db, kw.pop("kek", KEK), alg=alg, verify_window=TTL + SKEW, clock=clock, **kw)
    keyring.load()
    return keyring


def make_codec(keyring: Keyring, clock: FakeClock, **kw: Any) -> TokenCodec:
    return TokenCodec(
        keyring, issuer=ISSUER, audience=AUDIENCE, ttl=TTL, clock_skew=SKEW, clock=clock, **kw
    )


def claims(now: float, **overrides: Any) -> dict[str, Any]:
    """A claim set Garrison would accept at ``now``; a key set to ``None`` is left out."""
    body: dict[str, Any] = {
        "sub": "user-1",
        "iss": ISSUER,
        "aud": AUDIENCE,
        "iat": int(now),
        "nbf": int(now),
        "exp": int(now) + TTL,
        "jti": secrets.token_urlsafe(8),
    }
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not None}


def segment(value: Mapping[str, Any] | list[Any] | str | bytes | int) -> str:
    raw = value if isinstance(value, bytes) else json.dumps(value).encode()
    return b64url(raw)


def jws(
    header: Mapping[str, Any] | Any,
    payload: Mapping[str, Any] | Any,
    sign: Callable[[bytes], bytes] | None = None,
    signature: bytes = b"",
) -> str:
    """A compact JWS of exactly these parts, signed by ``sign`` (or carrying ``signature``)."""
    signing_input = f"{segment(header)}.{segment(payload)}"
    sig = sign(signing_input.encode()) if sign is not None else signature
    return f"{signing_input}.{b64url(sig)}"


def signed_by(keyring: Keyring, payload: Any, **header: Any) -> str:
    """Signed with the keyring's current private key: only the checks other than the signature
    can refuse it."""
    current = keyring.current
    head = {"alg": current.alg, "typ": "JWT", "kid": current.kid, **header}
    head = {k: v for k, v in head.items() if v is not None}
    return jws(head, payload, current.sign)
