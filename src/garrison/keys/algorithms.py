"""The signing algorithms: key generation, JWK export, sign and verify on raw bytes.

Written on ``cryptography`` directly because this is the hot path (see DESIGN.md: a generic JOSE
library costs 2-4x the bare signature check). Each function takes a key object already loaded once.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey
Verifier = Callable[[bytes, bytes], bool]

#: PS256 (RSASSA-PSS, SHA-256, MGF1, 32-byte salt) is the default: ASVS 5.0 Appendix C approves it;
#: RS256 (RSASSA-PKCS1-v1_5) is there as disallowed and stays only as an opt-in legacy choice.
ALGORITHMS: tuple[str, ...] = ("PS256", "ES256", "EdDSA", "RS256")
RSA_ALGS = frozenset({"PS256", "RS256"})
#: The smallest RSA key verified (an external IdP's); Garrison's own are ``RSA_GENERATE_BITS``.
RSA_BITS = 2048
#: RSA-3072 gives 128-bit security (NIST SP 800-57); RSA-2048 only 112 (ASVS 11.2.3).
RSA_GENERATE_BITS = 3072
_PSS_SALT_BYTES = 32
_P256_BYTES = 32
#: the order of P-256's base point: (r, s) and (r, n - s) are both valid ECDSA signatures
P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
_HALF_ORDER = P256_ORDER // 2
_B64_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_B64_VALUE = {c: i for i, c in enumerate(_B64_ALPHABET)}
_TO_STANDARD = bytes.maketrans(b"-_", b"+/")


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64decode_strict(segment: str) -> bytes:
    """Strict, canonical base64url: no padding, no stray bits, so one value has one spelling.
    ``ValueError`` (or ``binascii.Error``, a subclass) for anything else."""
    size = len(segment)
    # binascii's strict mode refuses every character outside the standard alphabet (and a
    # non-ASCII one fails to encode): what is left to refuse is what the translation from the URL
    # alphabet would let through, the standard alphabet's own ``+`` and ``/``, and padding
    if not size or size % 4 == 1 or "+" in segment or "/" in segment or "=" in segment:
        raise ValueError("not base64url")
    last = _B64_VALUE.get(segment[-1])
    if last is None:
        raise ValueError("not base64url")
    tail = size % 4  # 2 or 3 characters in the last quantum leave 4 or 2 unused low bits
    if tail and last & (0b1111 if tail == 2 else 0b11):
        raise ValueError("not canonical base64url")  # another spelling of the same bytes
    padded = segment.encode("ascii").translate(_TO_STANDARD) + b"=" * (-size % 4)
    return binascii.a2b_base64(padded, strict_mode=True)


def _int_b64(n: int, length: int | None = None) -> str:
    size = length or max(1, (n.bit_length() + 7) // 8)
    return b64url(n.to_bytes(size, "big"))


def generate(alg: str) -> PrivateKey:
    if alg in RSA_ALGS:
        return rsa.generate_private_key(public_exponent=65537, key_size=RSA_GENERATE_BITS)
    if alg == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    if alg == "EdDSA":
        return ed25519.Ed25519PrivateKey.generate()
    raise ValueError(f"unsupported algorithm {alg!r}")


def private_der(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def load_private(der: bytes) -> PrivateKey:
    key = serialization.load_der_private_key(der, password=None)
    if not isinstance(
        key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
    ):
        raise ValueError("unsupported key type")
    return key


def public_jwk(key: PrivateKey, alg: str, kid: str) -> dict[str, Any]:
    base = {"kid": kid, "alg": alg, "use": "sig"}
    if isinstance(key, rsa.RSAPrivateKey):
        nums = key.public_key().public_numbers()
        return {"kty": "RSA", "n": _int_b64(nums.n), "e": _int_b64(nums.e), **base}
    if isinstance(key, ec.EllipticCurvePrivateKey):
        pub = key.public_key().public_numbers()
        return {
            "kty": "EC",
            "crv": "P-256",
            "x": _int_b64(pub.x, _P256_BYTES),
            "y": _int_b64(pub.y, _P256_BYTES),
            **base,
        }
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return {"kty": "OKP", "crv": "Ed25519", "x": b64url(raw), **base}


def _rsa_padding(alg: str | None) -> padding.AsymmetricPadding:
    """An RSA key signs one algorithm, named by its key row or JWK: there is no default."""
    if alg == "PS256":
        return padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=_PSS_SALT_BYTES)
    if alg == "RS256":
        return padding.PKCS1v15()
    raise ValueError(f"an RSA key needs PS256 or RS256, not {alg!r}")


def signer(key: PrivateKey, alg: str | None = None) -> Callable[[bytes], bytes]:
    """Signs with ``key``; ``alg`` (PS256 or RS256) is required for an RSA key."""
    if isinstance(key, rsa.RSAPrivateKey):
        rsa_key, rsa_padding = key, _rsa_padding(alg)
        return lambda data: rsa_key.sign(data, rsa_padding, hashes.SHA256())
    if isinstance(key, ec.EllipticCurvePrivateKey):
        ec_key = key

        def sign_es256(data: bytes) -> bytes:
            r, s = decode_dss_signature(ec_key.sign(data, ec.ECDSA(hashes.SHA256())))
            if s > _HALF_ORDER:
                s = P256_ORDER - s  # low S: one spelling per signature (see ``es256_high_s``)
            return r.to_bytes(_P256_BYTES, "big") + s.to_bytes(_P256_BYTES, "big")

        return sign_es256
    ed_key = key
    return ed_key.sign


def es256_high_s(signature: bytes) -> bool:
    """Whether a raw ES256 signature (r || s) has ``s > n / 2``: the second spelling of the same
    signature, which Garrison never produces (it signs low S) and refuses on its own tokens."""
    return len(signature) == 2 * _P256_BYTES and (
        int.from_bytes(signature[_P256_BYTES:], "big") > _HALF_ORDER
    )


def verifier(public: PublicKey, alg: str | None = None) -> Verifier:
    """A ``(signing_input, signature) -> bool`` bound to one key; never raises on bad input.
    ``alg`` (PS256 or RS256) is required for an RSA key: one key verifies one algorithm."""
    if isinstance(public, rsa.RSAPublicKey):
        rsa_pub = public
        rsa_padding, sha256 = _rsa_padding(alg), hashes.SHA256()

        def verify_rsa(data: bytes, sig: bytes) -> bool:
            try:
                rsa_pub.verify(sig, data, rsa_padding, sha256)
            except (InvalidSignature, ValueError):
                return False
            return True

        return verify_rsa
    if isinstance(public, ec.EllipticCurvePublicKey):
        ec_pub = public
        ecdsa = ec.ECDSA(hashes.SHA256())

        def verify_es256(data: bytes, sig: bytes) -> bool:
            if len(sig) != 2 * _P256_BYTES:
                return False
            der = encode_dss_signature(
                int.from_bytes(sig[:_P256_BYTES], "big"), int.from_bytes(sig[_P256_BYTES:], "big")
            )
            try:
                ec_pub.verify(der, data, ecdsa)
            except (InvalidSignature, ValueError):
                return False
            return True

        return verify_es256
    ed_pub = public

    def verify_eddsa(data: bytes, sig: bytes) -> bool:
        try:
            ed_pub.verify(sig, data)
        except (InvalidSignature, ValueError):
            return False
        return True

    return verify_eddsa
