"""The backup container refuses every reordering, truncation, extension and edit (O1)."""

from __future__ import annotations

import io
import struct

import pytest

from garrison.backup.container import (
    MAGIC,
    BackupError,
    ChunkWriter,
    backup_key,
    read_chunks,
    read_header,
)
from garrison.keys.sealing import new_secret

KEY = backup_key(new_secret())
CHUNKS = [b"first chunk\n", b"second chunk\n", b"third chunk\n"]


def build(chunks: list[bytes] = CHUNKS, key: bytes = KEY) -> bytes:
    out = io.BytesIO()
    writer = ChunkWriter(out, key, {"tables": ["users"], "source_dialect": "sqlite"})
    for chunk in chunks:
        writer.write(chunk)
    writer.close()
    return out.getvalue()


def split(data: bytes) -> tuple[bytes, list[bytes]]:
    """(magic + header, [frame, ...]) with each frame including its length prefix."""
    (size,) = struct.unpack(">I", data[len(MAGIC) : len(MAGIC) + 4])
    at = len(MAGIC) + 4 + size
    head, frames = data[:at], []
    while at < len(data):
        (length,) = struct.unpack(">I", data[at : at + 4])
        frames.append(data[at : at + 4 + length])
        at += 4 + length
    return head, frames


def read_all(data: bytes, key: bytes = KEY) -> list[bytes]:
    src = io.BytesIO(data)
    _header, digest, chunk_key = read_header(src, key)
    return list(read_chunks(src, digest, chunk_key))


@pytest.mark.req("O1")
def test_round_trip_and_header() -> None:
    data = build()
    assert read_all(data) == CHUNKS  # the last chunk is sealed as last: no empty trailer
    header, _, _ = read_header(io.BytesIO(data), KEY)
    assert header["tables"] == ["users"]
    for chunk in CHUNKS:
        assert chunk not in data


@pytest.mark.req("O1")
def test_a_wrong_key_is_named_as_such() -> None:
    with pytest.raises(BackupError, match="backup key does not match"):
        read_all(build(), backup_key(new_secret()))


def _tampered() -> dict[str, bytes]:
    data = build()
    head, frames = split(data)
    other_head, other_frames = split(build())
    flipped = bytearray(data)
    flipped[len(head) + 30] ^= 0x01
    return {
        "bit flipped in a chunk": bytes(flipped),
        "header edited": data.replace(b'"sqlite"', b'"sqlitX"'),
        "chunks swapped": head + frames[1] + frames[0] + b"".join(frames[2:]),
        "chunk repeated": head + frames[0] + b"".join(frames),
        "chunk dropped": head + b"".join(frames[1:]),
        "cut at a chunk boundary": head + b"".join(frames[:-1]),
        "cut inside a chunk": data[:-7],
        "cut after the header": head,
        "chunk appended": data + frames[1],
        "chunk from another backup": head + other_frames[0] + b"".join(frames[1:]),
        "header from another backup": other_head + b"".join(frames),
        "garbage appended": data + b"\x00\x00\x00\x01x",
        "impossible length": head + b"\xff\xff\xff\xff" + b"".join(frames),
        "not a backup": b"PK\x03\x04" + data[4:],
    }


@pytest.mark.req("O1")
@pytest.mark.parametrize("case", list(_tampered()))
def test_tampering_is_refused(case: str) -> None:
    with pytest.raises(BackupError) as caught:
        read_all(_tampered()[case])
    assert caught.value.status == 400
    assert caught.value.detail  # a clear message, never a stack trace
