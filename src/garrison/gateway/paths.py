"""One canonical form of a request path, so the path that is authorized is the path that is served.

``/public/../admin``, ``/public/%2e%2e/admin`` and ``//admin`` must not match a ``/public`` or miss an
``/admin`` rule: the path is percent-decoded once, then dot segments are resolved (RFC 3986 §5.2.4)
and repeated slashes collapsed. A NUL, a backslash or bytes that are not UTF-8 are refused outright
(``None``) rather than guessed at, since backends disagree about them.
"""

from __future__ import annotations

from urllib.parse import unquote


def canonical_path(raw: str) -> str | None:
    try:
        path = unquote(raw.split("?", 1)[0].split("#", 1)[0], errors="strict")
    except UnicodeDecodeError:
        return None
    if "\x00" in path or "\\" in path:
        return None
    if not path.startswith("/"):
        path = "/" + path
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
