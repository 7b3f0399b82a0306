"""The one rule for text Garrison stores or looks up (E7): no control characters.

Every identifier and label that reaches the database or the audit log (usernames, emails, tenant
ids, role names, API key names and scopes, vault secret names, audit filters, delete reasons) and
every claim of a token Garrison accepts (``tokens.jws.check_claims``: ``sub``, ``email``,
``preferred_username`` and the other top-level claims; ``identity.external`` for role and tenant
claims at a dotted path) passes ``check_text`` where it enters the domain, so one character class
is refused everywhere with one reason:

- C0 controls U+0000-U+001F (tab only where a field allows it, ``tab=True``) and DEL U+007F:
  PostgreSQL refuses NUL in ``text`` (a 500 before this rule), and CR, LF or ESC forge lines and
  terminal output wherever the value is printed;
- C1 controls U+0080-U+009F (U+0085 is a line break to many readers);
- U+2028 LINE SEPARATOR and U+2029 PARAGRAPH SEPARATOR (line breaks to JavaScript and editors);
- unpaired surrogates U+D800-U+DFFF, which JSON can spell (``"\\ud800"``) but UTF-8 cannot
  encode (a database driver raises on them).

Lookups by a value that no stored record can hold use ``control_character`` and answer "no such
record" instead (a login with a NUL in the name is a failed login, not a 422 that tells a caller
more than "no").
"""

from __future__ import annotations

import re

from garrison.errors import ValidationError

#: what no stored text may hold; ``_NOT_TEXT_TAB`` lets a tab through
_NOT_TEXT = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
_NOT_TEXT_TAB = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")


def control_character(value: str, *, tab: bool = False) -> str | None:
    """``"U+0000 at 3"``: the first refused character of ``value`` and its index; None if none."""
    found = (_NOT_TEXT_TAB if tab else _NOT_TEXT).search(value)
    return None if found is None else f"U+{ord(found.group()):04X} at {found.start()}"


def plain_json_text(text: str) -> bool:
    """Whether no string decoded from the JSON ``text`` can hold a character ``control_character``
    refuses: ``text`` has no escape at all (``\\n``, ``\\u0000``...) and no such character raw.
    False says nothing: the decoded strings must then be checked one by one."""
    return "\\" not in text and _NOT_TEXT.search(text) is None


def check_text(field: str, value: str, *, tab: bool = False, max_length: int | None = None) -> str:
    """``value`` unchanged when it holds no control character (see the module doc) and fits
    ``max_length``; ``ValidationError`` (422) naming ``field`` otherwise."""
    if not isinstance(value, str):
        raise ValidationError(f"{field}: not a string", reasons=[f"{field}: must be a string"])
    bad = control_character(value, tab=tab)
    if bad is not None:
        raise ValidationError(
            f"{field}: control character {bad}",
            reasons=[f"{field}: control characters are not allowed ({bad})"],
        )
    if max_length is not None and len(value) > max_length:
        raise ValidationError(
            f"{field}: longer than {max_length} characters",
            reasons=[f"{field}: at most {max_length} characters"],
        )
    return value
