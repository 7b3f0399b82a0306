"""The encrypted backup container (O1): a plaintext header, then a sequence of sealed chunks.

Layout::

    "GARRISON-BACKUP\\n" | u32 header length | header (JSON) | frame* ;  frame = u32 length | sealed

Each file has its own AES-256-GCM key, derived with HKDF from the backup key and a random salt in
the header, so random nonces never repeat across files. Every chunk's associated data is the
SHA-256 of magic + header, the chunk's index and whether it is the last one, so:

- an edited header (tables, revision, salt) fails every chunk;
- chunks reordered, repeated or dropped fail (the index);
- a file cut at a chunk boundary fails (its new last chunk was not sealed as last), and so does
  anything appended after the real last chunk (which was).

The header carries a key check value, so a wrong key is told apart from a damaged file.
Chunks are read and written one at a time: a backup never has to fit in memory.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from garrison.errors import GarrisonError
from garrison.keys.sealing import SealError, derive_key, seal, unseal

MAGIC = b"GARRISON-BACKUP\n"
FORMAT_VERSION = 1
BACKUP_PURPOSE = b"backup"
#: Plaintext bytes per chunk, and the most a frame may claim (a corrupt length is refused early).
CHUNK_BYTES = 1 << 20
_MAX_FRAME = CHUNK_BYTES * 4 + 64
_MAX_HEADER = 1 << 16
_U32 = struct.Struct(">I")
_AAD_TAIL = struct.Struct(">QB")


class BackupError(GarrisonError):
    status = 400
    code = "backup_invalid"
    title = "The backup cannot be used"


def backup_key(secret: str) -> bytes:
    """The master backup key: its own HKDF purpose, never the vault's or the keyring's key."""
    return derive_key(secret, BACKUP_PURPOSE)


def _hkdf(master: bytes, salt: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(master)


def _file_keys(master: bytes, salt: bytes) -> tuple[bytes, bytes]:
    """(chunk key, key check value) for one file."""
    return (
        _hkdf(master, salt, b"garrison-backup-v1-chunks"),
        _hkdf(master, salt, b"garrison-backup-v1-check")[:16],
    )


def _aad(header_digest: bytes, index: int, last: bool) -> bytes:
    return header_digest + _AAD_TAIL.pack(index, 1 if last else 0)


@dataclass(frozen=True, slots=True)
class Header:
    """What a backup says about itself (authenticated by every chunk)."""

    fields: dict[str, Any]

    def __getitem__(self, name: str) -> Any:
        return self.fields[name]


class ChunkWriter:
    """Seals plaintext chunks into ``out``; ``close`` seals the last one (possibly empty)."""

    def __init__(self, out: IO[bytes], master: bytes, header: dict[str, Any]) -> None:
        salt = os.urandom(16)
        self._key, check = _file_keys(master, salt)
        fields = {
            **header,
            "format": FORMAT_VERSION,
            "salt": base64.b64encode(salt).decode(),
            "key_check": base64.b64encode(check).decode(),
        }
        raw = json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()
        self._out = out
        self._digest = hashlib.sha256(MAGIC + raw).digest()
        self._index = 0
        self._pending: bytes | None = None
        out.write(MAGIC + _U32.pack(len(raw)) + raw)

    def write(self, plaintext: bytes) -> None:
        """Queue a chunk; the previous one is sealed now that it is known not to be the last."""
        if self._pending is not None:
            self._seal(self._pending, last=False)
        self._pending = plaintext

    def close(self) -> None:
        self._seal(self._pending or b"", last=True)
        self._pending = None

    def _seal(self, plaintext: bytes, *, last: bool) -> None:
        sealed = seal(self._key, plaintext, _aad(self._digest, self._index, last))
        self._out.write(_U32.pack(len(sealed)) + sealed)
        self._index += 1


def _raw_header(src: IO[bytes]) -> bytes:
    if src.read(len(MAGIC)) != MAGIC:
        raise BackupError("not a Garrison backup (bad magic)")
    size = _read_u32(src, "header length")
    if size > _MAX_HEADER:
        raise BackupError("backup header is corrupt (too long)")
    return _read_exact(src, size, "header")


def plain_header(src: IO[bytes]) -> dict[str, Any]:
    """The header's fields as written (``created_at``, ``tables`` ...), read without the key:
    enough to tell a backup from another file and when it was made, not to trust its contents.
    ``BackupError`` for a file that is not a Garrison backup."""
    try:
        fields = json.loads(_raw_header(src))
    except ValueError:
        raise BackupError("backup header is corrupt") from None
    if not isinstance(fields, dict):
        raise BackupError("backup header is corrupt")
    return fields


def peek_header(src: IO[bytes]) -> tuple[Header, bytes, bytes, bytes]:
    """The header of a Garrison backup without its key: (header, raw header, salt, key check).
    ``BackupError`` for a foreign file (magic), a corrupt header or an unknown format. The header
    is not authenticated yet: only ``read_header`` with the key, then the chunks, prove it."""
    raw = _raw_header(src)
    try:
        fields = json.loads(raw)
        salt = base64.b64decode(fields["salt"], validate=True)
        check = base64.b64decode(fields["key_check"], validate=True)
        version = fields["format"]
    except (ValueError, KeyError, TypeError):
        raise BackupError("backup header is corrupt") from None
    if version != FORMAT_VERSION:
        raise BackupError(f"backup format {version!r} is not supported (expected {FORMAT_VERSION})")
    return Header(fields), raw, salt, check


def read_header(src: IO[bytes], master: bytes) -> tuple[Header, bytes, bytes]:
    """The header, its digest and the chunk key; ``BackupError`` for a foreign file or wrong key."""
    header, raw, salt, check = peek_header(src)
    fields = header.fields
    key, expected = _file_keys(master, salt)
    if not hmac.compare_digest(check, expected):
        raise BackupError(
            "backup key does not match this file (GARRISON_BACKUP_KEY, or SECRET_ENCRYPTION_KEY "
            "when no backup key is set), or its header was altered"
        )
    return Header(fields), hashlib.sha256(MAGIC + raw).digest(), key


def read_chunks(src: IO[bytes], digest: bytes, key: bytes) -> Iterator[bytes]:
    """Each chunk's plaintext in order, authenticated; ``BackupError`` at the first bad one."""
    index = 0
    frame = _read_frame(src)
    if frame is None:
        raise BackupError("backup is truncated: no data after the header")
    while frame is not None:
        following = _read_frame(src)
        last = following is None
        try:
            yield unseal(key, frame, _aad(digest, index, last))
        except SealError:
            problem = "truncated or altered" if last else "altered, reordered or appended to"
            raise BackupError(
                f"backup failed its integrity check at chunk {index}: the file was {problem}"
            ) from None
        frame = following
        index += 1


def _read_frame(src: IO[bytes]) -> bytes | None:
    head = src.read(_U32.size)
    if not head:
        return None
    if len(head) < _U32.size:
        raise BackupError("backup is truncated (inside a chunk header)")
    (size,) = _U32.unpack(head)
    if size > _MAX_FRAME:
        raise BackupError("backup is corrupt: a chunk claims an impossible length")
    return _read_exact(src, size, "chunk")


def _read_u32(src: IO[bytes], what: str) -> int:
    value: int = _U32.unpack(_read_exact(src, _U32.size, what))[0]
    return value


def _read_exact(src: IO[bytes], size: int, what: str) -> bytes:
    data = src.read(size)
    if len(data) != size:
        raise BackupError(f"backup is truncated (inside a {what})")
    return data
