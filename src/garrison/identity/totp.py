"""TOTP (RFC 6238) on ``pyotp``: seeds, the otpauth URI, and which time step a code belongs to.

Codes are 6 digits over 30-second steps with HMAC-SHA1, what every authenticator app reads from an
``otpauth://`` URI. A code is accepted for the current step and one step either side (clock drift
of up to 30 s each way, RFC 6238 section 5.2); the caller refuses a step at or before the last one
accepted, so each code works once (ASVS 6.5.1). Seeds are 160 random bits from ``secrets``
(pyotp's ``random_base32`` draws from ``SystemRandom``; ASVS 6.5.3). Time is passed in.
"""

from __future__ import annotations

import re

import pyotp
from pyotp.exceptions import OTPVerificationError

DIGITS = 6
PERIOD = 30
DRIFT_STEPS = 1
CODE_RE = re.compile(r"^[0-9]{6}$")


def new_seed() -> str:
    """A fresh base32 seed of 160 bits (RFC 4226's recommended length)."""
    return pyotp.random_base32(32)


def provisioning_uri(seed: str, account: str, issuer: str) -> str:
    """The ``otpauth://totp/...`` URI an authenticator app reads (usually from a QR code)."""
    return pyotp.TOTP(seed, digits=DIGITS, interval=PERIOD).provisioning_uri(
        name=account, issuer_name=issuer
    )


def matching_step(seed: str, code: str, now: float) -> int | None:
    """The time step ``code`` is valid for, within the allowed drift, or None."""
    if not CODE_RE.fullmatch(code):
        return None
    totp = pyotp.TOTP(seed, digits=DIGITS, interval=PERIOD)
    try:
        return totp.verify_and_get_timecode(code, for_time=now, valid_window=DRIFT_STEPS)
    except OTPVerificationError:
        return None


def code_at(seed: str, now: float) -> str:
    """The code of the step ``now`` falls in (tests and diagnostics)."""
    return pyotp.TOTP(seed, digits=DIGITS, interval=PERIOD).at(now)
