"""The strict base64url decoder every token segment goes through (A3): one spelling per value.

The decoder once checked the alphabet with a regular expression over the whole segment (2 µs of a
first-sight verify); it now leaves the alphabet to ``binascii``'s strict mode and refuses only the
characters that the translation to the standard alphabet would let through (``+``, ``/``, ``=``).
The reference below is the regular-expression version: on every input the two must agree.
"""

from __future__ import annotations

import binascii
import random
import re

import pytest

from garrison.keys.algorithms import b64decode_strict, b64url

_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_VALUE = {c: i for i, c in enumerate(_ALPHABET)}
_URLSAFE = re.compile(r"[A-Za-z0-9_-]+")


def reference(segment: str) -> bytes:
    size = len(segment)
    if not _URLSAFE.fullmatch(segment) or size % 4 == 1:
        raise ValueError("not base64url")
    tail = size % 4
    if tail and _VALUE[segment[-1]] & (0b1111 if tail == 2 else 0b11):
        raise ValueError("not canonical base64url")
    padded = segment.encode("ascii").translate(bytes.maketrans(b"-_", b"+/")) + b"=" * (-size % 4)
    return binascii.a2b_base64(padded, strict_mode=True)


def outcome(decode: object, segment: str) -> bytes | str:
    try:
        return decode(segment)  # type: ignore[operator,no-any-return]
    except ValueError:  # binascii.Error and UnicodeError are ValueErrors
        return "refused"


HOSTILE = [
    "", "A", "AA", "AB", "AAA", "AAB", "AAAA", "AA==", "AA=", "A===", "+/+/", "ab+c", "ab/c",
    "ab c", "ab\nc", "abc\n", "\nabc", "ab\tc", "ab.c", "ab!c", "abcé", "abc\x00", "ab\u2028c",
    "AAAA" * 300 + "=", "-_-_", "____", "----", "AQ", "AR", "AQI", "AQJ", "eyJ9", "e30", "e31",
]  # fmt: skip


@pytest.mark.req("A3")
@pytest.mark.parametrize("segment", HOSTILE)
def test_hostile_segments_are_judged_as_before(segment: str) -> None:
    assert outcome(b64decode_strict, segment) == outcome(reference, segment)


@pytest.mark.req("A3")
def test_random_segments_are_judged_as_before() -> None:
    rng = random.Random(20261202)
    chars = _ALPHABET + "+/= .\n\t!é\x00"
    for _ in range(20_000):
        if rng.random() < 0.5:  # near-valid: a genuine encoding with one character changed
            text = b64url(rng.randbytes(rng.randrange(0, 40)))
            if text and rng.random() < 0.7:
                at = rng.randrange(len(text))
                text = text[:at] + rng.choice(chars) + text[at + 1 :]
        else:
            text = "".join(rng.choice(chars) for _ in range(rng.randrange(0, 12)))
        assert outcome(b64decode_strict, text) == outcome(reference, text), repr(text)


@pytest.mark.req("A3")
def test_every_genuine_encoding_round_trips() -> None:
    rng = random.Random(7)
    for size in range(0, 70):
        data = rng.randbytes(size)
        if size:
            assert b64decode_strict(b64url(data)) == data
