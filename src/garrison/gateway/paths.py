"""One canonical form of a request path, so the path that is authorized is the path that is served.

``/public/../admin``, ``/public/%2e%2e/admin`` and ``//admin`` must not match a ``/public`` or miss an
``/admin`` rule: the path is percent-decoded once, then dot segments are resolved (RFC 3986 §5.2.4)
and repeated slashes collapsed. A NUL, a backslash or bytes that are not UTF-8 are refused outright
(``None``) rather than guessed at, since backends disagree about them; so are a dot segment with
path parameters (``..;``) and a raw ``#`` (a fragment is never part of a request target).
"""

from __future__ import annotations

import re
from urllib.parse import unquote

#: A dot segment with path parameters (``/..;/``, ``/.;x=1/``): Tomcat, Jetty and Spring drop the
#: parameters and resolve it as ``..``, so ``/public/..;/admin`` would be authorized as a ``/public``
#: path and served as ``/admin``.
_DOT_WITH_PARAMS = re.compile(r"/\.{1,2};")


def canonical_path(raw: str) -> str | None:
    target = raw.split("?", 1)[0]
    if "#" in target:  # never in a request target; a backend may read past it (nginx passes it on)
        return None
    try:
        path = unquote(target, errors="strict")
    except UnicodeDecodeError:
        return None
    if not path.startswith("/"):
        path = "/" + path
    if "\x00" in path or "\\" in path or _DOT_WITH_PARAMS.search(path):
        return None
    if "/." not in path and "//" not in path:
        return path
    out: list[str] = []
    for segment in path.split("/")[1:]:
        if segment == "..":
            if out:
                out.pop()
        elif segment not in (".", ""):
            out.append(segment)
    trailing = "/" if path.endswith(("/", "/.", "/..")) and out else ""
    return "/" + "/".join(out) + trailing
