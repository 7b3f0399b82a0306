"""Signed retention checkpoints (L5, L7): where the chain restarts after old records are pruned.

A checkpoint holds the last pruned record's ``seq`` and ``hash``, signed with the service's current
signing key. The remaining chain links to that hash, so it stays verifiable; the signature stops
anyone with only database access from planting a new root after rewriting history. A checkpoint
keeps verifying after its key retires: the public JWK stays in ``signing_keys``.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from joserfc.errors import JoseError
from joserfc.jwk import JWKRegistry

from garrison.audit.chain import canonical
from garrison.keys import algorithms
from garrison.storage.db import Database
from garrison.storage.schema import audit_checkpoints, signing_keys

Sign = Callable[[bytes], bytes]


@dataclass(frozen=True, slots=True)
class Checkpoint:
    seq: int
    hash: str
    created_at: float
    kid: str
    signature: str  # base64url

    def payload(self) -> bytes:
        return signed_payload(self.seq, self.hash, self.created_at)

    def valid(self, jwk: Mapping[str, Any] | None) -> bool:
        """True when ``jwk`` (the key named by ``kid``) verifies the signature."""
        if jwk is None:
            return False
        try:
            public = JWKRegistry.import_key(dict(jwk)).public_key
            signature = base64.urlsafe_b64decode(self.signature + "=" * (-len(self.signature) % 4))
        except (JoseError, ValueError, TypeError, binascii.Error):
            return False
        if not isinstance(public, algorithms.PublicKey):
            return False
        alg = jwk.get("alg")
        try:
            verify = algorithms.verifier(public, alg if isinstance(alg, str) else None)
        except ValueError:  # an RSA JWK that names no RSA algorithm
            return False
        return verify(self.payload(), signature)


def signed_payload(seq: int, hash_: str, created_at: float) -> bytes:
    body = {"purpose": "garrison-audit-checkpoint", "seq": seq, "hash": hash_}
    return canonical({**body, "created_at": repr(float(created_at))})


def make_checkpoint(seq: int, hash_: str, now: float, kid: str, sign: Sign) -> Checkpoint:
    signature = algorithms.b64url(sign(signed_payload(seq, hash_, now)))
    return Checkpoint(seq, hash_, now, kid, signature)


def store_checkpoint(conn: sa.Connection, checkpoint: Checkpoint) -> None:
    conn.execute(
        audit_checkpoints.insert().values(
            seq=checkpoint.seq,
            hash=checkpoint.hash,
            created_at=checkpoint.created_at,
            kid=checkpoint.kid,
            signature=checkpoint.signature,
        )
    )


def latest_checkpoint(conn: sa.Connection) -> Checkpoint | None:
    row = conn.execute(
        sa.select(audit_checkpoints).order_by(audit_checkpoints.c.id.desc()).limit(1)
    ).first()
    if row is None:
        return None
    return Checkpoint(int(row.seq), row.hash, float(row.created_at), row.kid, row.signature)


def stored_public_keys(db: Database) -> Callable[[str], Mapping[str, Any] | None]:
    """A ``kid -> public JWK`` lookup over every key ever made (retired ones included)."""

    def lookup(kid: str) -> Mapping[str, Any] | None:
        with db.begin() as conn:
            jwk = conn.execute(
                sa.select(signing_keys.c.public_jwk).where(signing_keys.c.kid == kid)
            ).scalar_one_or_none()
        return dict(jwk) if jwk else None

    return lookup
