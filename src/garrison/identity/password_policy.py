"""What a new password must be (A15, ASVS 6.2): long enough, not common, not built from context.

The rules, applied wherever a password is set (``users create`` over the CLI and HTTP, an
administrator's reset, the user's own change):

- at least ``GARRISON_PASSWORD_MIN_LENGTH`` characters (8 at the least, the default; configurable
  up, never below 8) and up to ``MAX_LENGTH`` (1024: 64 and far more are fine);
- no composition rules: any characters, no required mix of case, digits or symbols;
- not one of the most common passwords: the 30,000 most common passwords of the list that ships in
  the ``zxcvbn`` package (MIT licence; from Mark Burnett's ten million passwords corpus), of
  which 11,611 are 8 characters or longer, so well over the 3,000 that fit this policy. Compared in
  lower case, as the list is; read from the installed package, never from the network;
- not built from a context word: ``garrison`` (the product), the account's username and the local
  part of its email address. Compared in lower case, as substrings; words shorter than 3 characters
  are not context words (a username ``jo`` would otherwise forbid every password holding ``jo``).

The password is checked exactly as given: no trimming, truncation or case folding of the password
that is stored (ASVS 6.2.8); lower case is used only to compare with the lists.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache

from zxcvbn.frequency_lists import FREQUENCY_LISTS

from garrison.errors import ValidationError

MIN_LENGTH = 8
MAX_LENGTH = 1024
#: the product and system names a password must not be built from (ASVS 6.1.2)
CONTEXT_WORDS: tuple[str, ...] = ("garrison",)
_MIN_CONTEXT_WORD = 3


@cache
def common_passwords() -> frozenset[str]:
    """The common-password list shipped in the ``zxcvbn`` wheel, lower case (loaded once)."""
    words = FREQUENCY_LISTS["passwords"]
    if isinstance(words, str):
        words = words.split(",")
    return frozenset(str(word).lower() for word in words)


@dataclass(frozen=True, slots=True)
class PasswordPolicy:
    min_length: int = MIN_LENGTH

    def __post_init__(self) -> None:
        if not MIN_LENGTH <= self.min_length <= MAX_LENGTH:
            raise ValueError(f"min_length must be between {MIN_LENGTH} and {MAX_LENGTH}")

    def problems(
        self, password: str, *, username: str | None = None, email: str | None = None
    ) -> list[str]:
        """Why ``password`` is refused for this account; empty when it is fine."""
        found = []
        if len(password) < self.min_length:
            found.append(f"password: at least {self.min_length} characters")
        if len(password) > MAX_LENGTH:
            found.append(f"password: at most {MAX_LENGTH} characters")
        lowered = password.lower()
        if lowered in common_passwords():
            found.append("password: one of the most common (breached) passwords")
        for word in context_words(username, email):
            if word in lowered:
                found.append(f"password: built from the context word {word!r}")
        return found

    def check(
        self, password: str, *, username: str | None = None, email: str | None = None
    ) -> None:
        """Raise ``ValidationError`` (422) with every reason when ``password`` is refused."""
        reasons = self.problems(password, username=username, email=email)
        if reasons:
            why = "; ".join(reason.removeprefix("password: ") for reason in reasons)
            raise ValidationError(f"password refused: {why}", reasons=reasons, code="weak_password")


def context_words(username: str | None, email: str | None) -> Iterable[str]:
    words = [*CONTEXT_WORDS, username or ""]
    if email and "@" in email:
        words.append(email.rsplit("@", 1)[0])
    seen = dict.fromkeys(w.strip().lower() for w in words)
    return [w for w in seen if len(w) >= _MIN_CONTEXT_WORD]


_TEMPORARY_ALPHABET = "abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"
_TEMPORARY_LENGTH = 20  # ~117 bits


def temporary_password(
    policy: PasswordPolicy, *, username: str | None = None, email: str | None = None
) -> str:
    """A random password an administrator hands over once (a reset, ASVS 6.4.1): CSPRNG output
    that meets ``policy``, without look-alike characters (0/O, 1/l/I)."""
    length = max(_TEMPORARY_LENGTH, policy.min_length)
    while True:
        candidate = "".join(secrets.choice(_TEMPORARY_ALPHABET) for _ in range(length))
        if not policy.problems(candidate, username=username, email=email):
            return candidate
