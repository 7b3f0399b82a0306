"""One canonical form of a request path, so the path that is authorized is the path that is served.

Every path Garrison authorizes goes through ``canonicalize`` once: ``/verify``'s original URI, the
built-in proxy's request target, the size caps, and the action registry's route matching (which
also canonicalizes the configured prefixes). The same string then reaches the policy, the audit
record and the upstream. Backends read paths in many ways (servlet containers drop ``;params``,
Windows and IIS drop a trailing dot or space, routers match the raw ``/a/../b``, some decode
``%2F`` into a separator); a path that two of them could read as different routes has no safe
canonical form and is refused (``AmbiguousPath``, a 400 problem+json at ``/verify`` and the proxy).

The rule set, applied to the path (what comes before the first ``?``):

- percent escapes of *unreserved* characters (``A-Z a-z 0-9 - . _ ~``) are decoded (``%61dmin`` is
  ``admin``, ``%2e`` is ``.``); every other escape stays encoded, hex in upper case (``%c3`` ->
  ``%C3``), and must decode, with the rest of its segment, to valid UTF-8;
- raw characters that are not allowed in a path but carry no structure (``" < > ^ ` { | }`` and
  non-ASCII bytes) are percent-encoded, so a raw and an encoded spelling are one path;
- empty segments (``//``) and ``.`` segments are removed; a trailing ``/`` is kept;
- refused: a ``..`` segment (raw or encoded: a backend that routes the raw path would serve the
  subtree Garrison resolved it out of); ``;`` raw or ``%3B`` (matrix parameters); an encoded ``/``
  (``%2F``), ``\\`` (``%5C``) or ``%`` (``%25``, double encoding); a raw backslash; a NUL or any
  control character, raw or encoded (``%00``-``%1F``, ``%7F``); a raw space; a raw ``#`` (a request
  target never carries a fragment); a ``%`` not followed by two hex digits; a segment that ends in
  ``.`` or a space (``%20``), which Windows backends strip (``/admin.`` is ``/admin`` to IIS).

Letter case is not folded here: a route is matched case-sensitively unless it sets
``case_insensitive = true`` (``route_covers`` and ``policy.registry``); a path that matches a
case-sensitive route only when case is ignored is refused there, since a case-insensitive backend
would serve that route while a case-sensitive match would authorize a shallower one.

An already-canonical path (the common case) costs one ``str.strip`` and four substring tests.
"""

from __future__ import annotations

import string
from urllib.parse import unquote_to_bytes

_UNRESERVED = frozenset(string.ascii_letters + string.digits + "-._~")
#: Characters that stand for themselves in a canonical path: unreserved, ``/``, and the
#: sub-delimiters, ``:`` and ``@`` that RFC 3986 allows in a segment, less ``;``.
_PLAIN = string.ascii_letters + string.digits + "-._~/!$&'()*+,=:@"
_PLAIN_SET = frozenset(_PLAIN)
#: Raw characters that are not valid in a request target but mean nothing structural: encoded.
_ENCODED_RAW = frozenset('"<>^`{|}')
_HEX = frozenset(string.hexdigits)
#: Escapes that are refused outright (decoded value): ``/``, ``\\``, ``;``, ``%`` and controls.
_REFUSED_ESCAPES = {
    0x2F: "an encoded '/'",
    0x5C: "an encoded '\\'",
    0x3B: "an encoded ';'",
    0x25: "an encoded '%' (double encoding)",
}
_HIGH = tuple("89ABCDEF")  # first hex digit of a byte above 0x7F


class AmbiguousPath(ValueError):
    """A path with no safe canonical form; ``reason`` says which rule refused it."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def canonical_path(raw: str) -> str | None:
    """The canonical path of a request target (``None`` when it has none); see the module doc."""
    try:
        return canonicalize(raw)
    except AmbiguousPath:
        return None


def canonicalize(raw: str) -> str:
    """The canonical path of a request target, or ``AmbiguousPath`` with the reason.

    ``raw`` is the target as sent, each byte one character (``bytes.decode("latin-1")``); a
    character above U+00FF (a configured prefix) is taken as its UTF-8 bytes. Idempotent.
    """
    path = raw.partition("?")[0]
    if (
        path[:1] == "/"
        and not path.strip(_PLAIN)
        and "//" not in path
        and "/." not in path
        and "./" not in path
        and path[-1] != "."
    ):
        return path
    return _slow(path)


def _slow(path: str) -> str:
    if "#" in path:  # never in a request target; a backend may read past it (nginx passes it on)
        raise AmbiguousPath("a raw '#' in the path")
    out: list[str] = []
    clean = ""
    for segment in path.split("/"):
        clean = _segment(segment) if "%" in segment or segment.strip(_PLAIN) else segment
        if clean in ("", "."):
            continue
        if clean == "..":
            raise AmbiguousPath("a '..' segment (backends disagree on resolving it)")
        if clean[-1] == "." or clean.endswith("%20"):
            raise AmbiguousPath("a segment ending in '.' or a space")
        out.append(clean)
    trailing = "/" if out and clean in ("", ".") else ""
    return "/" + "/".join(out) + trailing


def _segment(segment: str) -> str:
    """One segment: unreserved escapes decoded, others normalised, stray characters encoded."""
    parts = segment.split("%")
    chunks = [_raw(parts[0])]
    for part in parts[1:]:
        if len(part) < 2 or part[0] not in _HEX or part[1] not in _HEX:
            raise AmbiguousPath("a '%' not followed by two hex digits")
        value = int(part[:2], 16)
        char = chr(value)
        if char in _UNRESERVED:
            chunks.append(char)
        elif value in _REFUSED_ESCAPES:
            raise AmbiguousPath(_REFUSED_ESCAPES[value] + " in the path")
        elif value < 0x20 or value == 0x7F:
            raise AmbiguousPath("a control character in the path")
        else:
            chunks.append("%" + part[:2].upper())
        chunks.append(_raw(part[2:]))
    clean = "".join(chunks)
    if any(p.startswith(_HIGH) for p in clean.split("%")[1:]):  # a byte above 0x7F
        try:
            unquote_to_bytes(clean).decode("utf-8")
        except UnicodeDecodeError:
            raise AmbiguousPath("percent escapes that are not UTF-8") from None
    return clean


def _raw(text: str) -> str:
    if not text.strip(_PLAIN):
        return text
    out: list[str] = []
    for char in text:
        if char in _PLAIN_SET:
            out.append(char)
        elif char in _ENCODED_RAW or ord(char) > 0x7F:
            data = char.encode("latin-1") if ord(char) <= 0xFF else char.encode("utf-8")
            out.extend(f"%{byte:02X}" for byte in data)
        elif char == "\\":
            raise AmbiguousPath("a backslash in the path")
        elif char == ";":
            raise AmbiguousPath("a ';' in the path (matrix parameters)")
        elif char == " ":
            raise AmbiguousPath("a raw space in the path")
        else:
            raise AmbiguousPath("a control character in the path")
    return "".join(out)


def route_prefix(prefix: str) -> str:
    """The canonical form of a configured prefix, without a trailing ``/`` (``""`` for ``/``):
    ``/admin/*``, ``/admin/`` and ``/admin`` all name the ``/admin`` subtree. Raises
    ``AmbiguousPath`` for a prefix no request could be canonicalized to."""
    return canonicalize(prefix.rstrip("*").encode("utf-8").decode("latin-1")).rstrip("/")


def covers(prefix: str, path: str) -> bool:
    """Segment-wise: ``route_prefix`` ``/api`` covers ``/api``, ``/api/`` and ``/api/x``, never
    ``/apix``. Both canonical (and both folded, for a case-insensitive route). No allocation."""
    return path.startswith(prefix) and (len(path) == len(prefix) or path[len(prefix)] == "/")
