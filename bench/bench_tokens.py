"""Access-token verification cost against the bare signature check (A3 hot path).

For each of PS256 (the default, RSA-3072), ES256, EdDSA and the legacy RS256 (now also RSA-3072),
on one signing input:
- floor: ``cryptography``'s own verify of that signature (what any JWT library must pay);
- Garrison first sight: ``TokenCodec.verify`` with the verified-token cache off (every call parses,
  checks the header allow-list, verifies and validates the claims);
- Garrison cached: a token seen before (goal: within 5 us);
- joserfc ``jwt.decode`` + claims validation, and PyJWT when importable.
Ratios are to the floor measured in the same run (goal: first sight within 2x of the floor).

    uv run python bench/bench_tokens.py [--seconds 0.7]
"""

from __future__ import annotations

import argparse
import base64
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from garrison.keys import algorithms
from garrison.keys.algorithms import ALGORITHMS
from garrison.keys.keyring import Keyring
from garrison.storage import migrate
from garrison.storage.db import Database
from garrison.tokens.jwt import TokenCodec

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from bench.timing import per_op_us, table

ISSUER, AUDIENCE = "https://auth.example.test", "bench"
CLAIMS = {
    "sub": "6f1c2a0e-1f7b-4f55-9d55-2b7c2f0e8a11",
    "preferred_username": "alice",
    "email": "alice@example.test",
    "roles": ["user", "support"],
    "permissions": ["ticket.read", "ticket.create"],
    "tenant": "acme",
    "sid": "b0a3e7c2-5b5f-4a4f-8f59-4f1d7a1c0d3e",
}


def _b64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def floor_verify(keyring: Keyring, token: str) -> Callable[[], object]:
    """The bare ``cryptography`` call on this token's signing input and signature."""
    return signature_check(_private(keyring).public_key(), keyring.alg, token)


def signature_check(public: object, alg: str, token: str) -> Callable[[], object]:
    """``cryptography``'s verify of ``token``'s signature with ``public`` (``alg``'s key), as a
    call: also what the bench's bare-signed app pays on each request."""
    head, body, sig_b64 = token.split(".")
    data, sig = f"{head}.{body}".encode(), _b64(sig_b64)
    if isinstance(public, rsa.RSAPublicKey):
        rsa_key, sha256 = public, hashes.SHA256()
        pad: padding.AsymmetricPadding = (
            padding.PSS(mgf=padding.MGF1(sha256), salt_length=32)
            if alg == "PS256"
            else padding.PKCS1v15()
        )
        return lambda: rsa_key.verify(sig, data, pad, sha256)
    if isinstance(public, ec.EllipticCurvePublicKey):
        ec_key = public
        der = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
        ecdsa = ec.ECDSA(hashes.SHA256())
        return lambda: ec_key.verify(der, data, ecdsa)
    if isinstance(public, ed25519.Ed25519PublicKey):
        ed_key = public
        return lambda: ed_key.verify(sig, data)
    raise TypeError(f"no signature check for {type(public).__name__}")


def _private(keyring: Keyring) -> algorithms.PrivateKey:
    import sqlalchemy as sa

    from garrison.keys.sealing import unseal
    from garrison.storage.schema import signing_keys

    kid = keyring.current.kid
    with keyring.db.begin() as conn:
        sealed = conn.execute(
            sa.select(signing_keys.c.private_key).where(signing_keys.c.kid == kid)
        ).scalar_one()
    return algorithms.load_private(unseal(keyring.kek, sealed, kid.encode()))


def joserfc_verify(keyring: Keyring, token: str) -> Callable[[], object] | None:
    try:
        from joserfc import jwt
        from joserfc.jwk import KeySet
    except ImportError:
        return None
    key_set = KeySet.import_key_set(keyring.jwks())  # type: ignore[arg-type]
    registry = jwt.JWTClaimsRegistry(
        iss={"essential": True, "value": ISSUER},
        aud={"essential": True, "value": AUDIENCE},
        exp={"essential": True},
        sub={"essential": True},
    )
    allowed = [keyring.alg]

    def verify() -> object:
        decoded = jwt.decode(token, key_set, algorithms=allowed)
        registry.validate(decoded.claims)
        return decoded

    verify()
    return verify


def pyjwt_verify(keyring: Keyring, token: str) -> Callable[[], object] | None:
    try:
        import jwt as pyjwt  # type: ignore[import-not-found]  # PyJWT, optional
    except ImportError:
        return None
    public = _private(keyring).public_key()
    allowed = [keyring.alg]

    def verify() -> object:
        return pyjwt.decode(token, public, algorithms=allowed, audience=AUDIENCE, issuer=ISSUER)

    verify()
    return verify


def bench_alg(db: Database, alg: str, seconds: float) -> list[list[str]]:
    keyring = Keyring(db, bytes(range(32)), alg=alg, verify_window=930)
    keyring.load()
    keyring.rotate(alg=alg)  # a keyring with a current and a retired key, as after a rotation
    fresh = TokenCodec(keyring, issuer=ISSUER, audience=AUDIENCE, cache_size=0)
    cached = TokenCodec(keyring, issuer=ISSUER, audience=AUDIENCE)
    token, _ = fresh.issue(CLAIMS)
    cached.verify(token)
    candidates: list[tuple[str, Callable[[], object] | None]] = [
        ("cryptography verify (floor)", floor_verify(keyring, token)),
        ("Garrison first sight", lambda: fresh.verify(token)),
        ("Garrison cached", lambda: cached.verify(token)),
        ("joserfc decode+claims", joserfc_verify(keyring, token)),
        ("PyJWT decode", pyjwt_verify(keyring, token)),
    ]
    rows: list[list[str]] = []
    floor = 0.0
    for name, fn in candidates:
        if fn is None:
            rows.append([alg, name, "skipped (not installed)", ""])
            continue
        us = per_op_us(fn, seconds=seconds)
        floor = floor or us
        rows.append([alg, name, f"{us:9.2f}", f"{us / floor:5.2f}x"])
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=0.7, help="per timed loop (best of 3)")
    parser.add_argument("--alg", choices=ALGORITHMS, action="append")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", message="EdDSA is deprecated")
    with tempfile.TemporaryDirectory() as tmp:
        db = Database(f"sqlite:///{Path(tmp) / 'bench.db'}")
        migrate.upgrade(db)
        rows: list[list[str]] = []
        started = time.perf_counter()
        for alg in args.alg or ALGORITHMS:
            rows += bench_alg(db, alg, args.seconds)
        db.dispose()
    print(table(["alg", "path", "us/op", "vs floor"], rows))
    print(f"\n({time.perf_counter() - started:.0f} s; best of 3 loops of ~{args.seconds} s each)")


if __name__ == "__main__":
    main()
