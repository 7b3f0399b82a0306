"""argon2id password hashing (A1) with OWASP's parameters (m=19 MiB, t=2, p=1).

Hashing costs ~20 ms of CPU: callers in the event loop go through ``anyio.to_thread``. Verifying an
unknown user still hashes (against ``DUMMY_HASH``) so failures take the same time either way.
"""

from __future__ import annotations

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from garrison.errors import ValidationError

HASHER = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1, type=Type.ID)
MIN_LENGTH = 8
MAX_LENGTH = 1024
DUMMY_HASH = HASHER.hash("garrison-timing-equaliser")


def check_policy(password: str) -> None:
    if len(password) < MIN_LENGTH:
        raise ValidationError(f"password must be at least {MIN_LENGTH} characters")
    if len(password) > MAX_LENGTH:
        raise ValidationError(f"password must be at most {MAX_LENGTH} characters")


def hash_password(password: str) -> str:
    check_policy(password)
    return HASHER.hash(password)


def verify_password(stored: str | None, password: str) -> bool:
    """True when ``password`` matches; a missing hash costs the same time and returns False."""
    if len(password) > MAX_LENGTH:
        password = password[:MAX_LENGTH]
    try:
        return HASHER.verify(stored or DUMMY_HASH, password) and stored is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(stored: str) -> bool:
    return HASHER.check_needs_rehash(stored)
