"""Credentials in a query string (A8): found the way the backends that would read them parse it.

One test for Garrison's own requests (``gateway.asgi.Front``) and for the original URI that
``/verify`` is asked about. A parameter carries a credential when its *name*, read as web
frameworks read names, is one of ``CREDENTIAL_NAMES``:

- parameters are separated by ``&`` or ``;`` (the HTML 4 recommendation, still honoured by Java
  servlet containers, Perl, Ruby's Rack before 3, Python's ``cgi``);
- a name is percent-decoded (``%61ccess_token``, ``access%5Ftoken``), ``+`` is a space, leading
  and trailing white space is dropped, case is ignored;
- PHP reads ``.``, `` `` and an unclosed ``[`` in a name as ``_`` (``access.token``), and
  ``name[...]`` (PHP, Rack) as the parameter ``name``.

A parameter without ``=`` counts as well: it is a credential name either way. The usual query (no
``%``, ``+``, ``.`` or ``[``) costs one ``lower`` and one split.
"""

from __future__ import annotations

from urllib.parse import unquote_to_bytes

CREDENTIAL_NAMES = frozenset(
    {b"access_token", b"id_token", b"refresh_token", b"token", b"api_key", b"apikey", b"jwt"}
)
_NEEDS_DECODING = (b"%", b"+", b".", b"[", b" ", b"\t")


def has_query_credentials(query: bytes) -> bool:
    """Whether any parameter of ``query`` (no leading ``?``, no fragment) names a credential."""
    if not query:
        return False
    for part in query.lower().replace(b";", b"&").split(b"&"):
        name = part.partition(b"=")[0]
        if name in CREDENTIAL_NAMES:
            return True
        if any(marker in name for marker in _NEEDS_DECODING) and _decoded_hit(name):
            return True
    return False


def _decoded_hit(name: bytes) -> bool:
    decoded = unquote_to_bytes(name.replace(b"+", b" ")).lower().strip()
    php = decoded.replace(b".", b"_").replace(b" ", b"_")
    base = decoded.partition(b"[")[0].strip()
    if b"[" in php and b"]" not in php.partition(b"[")[2]:
        php = php.replace(b"[", b"_", 1)
    return any(
        candidate in CREDENTIAL_NAMES for candidate in (decoded, php, base, php.partition(b"[")[0])
    )
