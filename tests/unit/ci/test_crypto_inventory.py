"""The primitives of docs/asvs.md (V11) as the code has them: no weak hash or cipher anywhere in
the source, PKCS#1 v1.5 only for the opt-in legacy RS256, argon2id at or above the OWASP minimum,
and every unguessable value from ``secrets`` with 128 bits or more (A1, A2, A5, C6)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from garrison.identity import sessions
from garrison.identity.passwords import HASHER

SRC = Path(__file__).resolve().parents[3] / "src" / "garrison"
WEAK = re.compile(
    r"hashlib\.(md5|sha1)\b|hashes\.(MD5|SHA1)\b|modes\.ECB\b|algorithms\.(TripleDES|ARC4|Blowfish)"
    r"|\bimport random\b|\bfrom random import\b|uuid\.uuid[14]\(\)\s*\.hex"
)


#: Uses that are no security value: the 1-in-N sampling of /verify log lines.
NOT_SECURITY = {"gateway/verify.py: import random"}


def _sources() -> list[tuple[Path, str]]:
    return [(p, p.read_text()) for p in sorted(SRC.rglob("*.py"))]


@pytest.mark.req("A2", "C6")
@pytest.mark.asvs("11.3.1", "11.4.1", "11.4.3")
def test_no_weak_hash_cipher_or_rng_in_the_source() -> None:
    found = {
        f"{p.relative_to(SRC).as_posix()}: {m.group(0)}"
        for p, text in _sources()
        for m in WEAK.finditer(text)
    }
    assert found - NOT_SECURITY == set()
    # the scan sees what it looks for
    assert WEAK.search("hashlib.md5(b'x')")
    assert WEAK.search("import random")


@pytest.mark.req("A2")
@pytest.mark.asvs("11.3.1", "11.6.1")
def test_pkcs1_v1_5_appears_only_as_the_legacy_rs256_signature() -> None:
    users = [p.relative_to(SRC).as_posix() for p, text in _sources() if "PKCS1v15" in text]
    assert users == ["keys/algorithms.py"]
    text = (SRC / "keys" / "algorithms.py").read_text()
    assert text.count("padding.PKCS1v15()") == 1
    assert 'if alg == "RS256":\n        return padding.PKCS1v15()' in text


@pytest.mark.argon2_cost
@pytest.mark.req("A1")
@pytest.mark.asvs("11.4.2")
def test_argon2id_parameters_meet_the_owasp_minimum() -> None:
    """OWASP Password Storage Cheat Sheet: argon2id, m=19 MiB, t=2, p=1 at the least."""
    assert HASHER.type.name == "ID"
    assert HASHER.memory_cost >= 19 * 1024
    assert HASHER.time_cost >= 2
    assert HASHER.parallelism >= 1
    assert HASHER.hash("x").startswith("$argon2id$v=19$m=19456,t=2,p=1$")


@pytest.mark.req("A5")
@pytest.mark.asvs("7.2.3", "11.5.1")
def test_refresh_tokens_are_unique_csprng_values_of_256_bits() -> None:
    tokens = {sessions._new_token() for _ in range(2000)}
    assert len(tokens) == 2000
    for token in tokens:
        body = token.removeprefix(sessions.PREFIX)
        assert re.fullmatch(r"[A-Za-z0-9_-]{43}", body)  # 32 random bytes
    source = (SRC / "identity" / "sessions.py").read_text()
    assert "secrets.token_urlsafe(32)" in source
