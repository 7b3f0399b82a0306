"""Small raw-ASGI helpers for the framework-free paths (``/verify``, the proxy, the edge layers)."""

from __future__ import annotations

from collections.abc import Iterable

from starlette.types import Scope, Send

from garrison.errors import BadRequestError, GarrisonError
from garrison.gateway.problem import CONTENT_TYPE, problem_body, problem_headers

RawHeaders = list[tuple[bytes, bytes]]


def header(scope: Scope, name: bytes) -> bytes | None:
    """The first value of a request header (``name`` lower-case), or None."""
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


def single_header(scope: Scope, name: bytes) -> bytes | None:
    """The value of a header that must not differ between its lines (``name`` lower-case).

    Garrison checks one value while a backend behind it may read another (the last, or all of them
    joined): ``X-Tenant-ID: acme`` then ``X-Tenant-ID: globex`` is refused, not taken as ``acme``.
    """
    found: bytes | None = None
    for key, value in scope["headers"]:
        if key == name:
            if found is not None and value != found:
                raise BadRequestError(f"{name.decode()} sent more than once with different values")
            found = bytes(value)
    return found


def header_value(text: str) -> bytes:
    """A header value that cannot split a response: printable ASCII only, at most 1 KiB."""
    return "".join(ch if 32 <= ord(ch) < 127 else "?" for ch in text)[:1024].encode("ascii")


_EMPTY = (b"content-length", b"0")


async def send_response(
    send: Send, status: int, headers: Iterable[tuple[bytes, bytes]], body: bytes = b""
) -> None:
    length = (b"content-length", str(len(body)).encode()) if body else _EMPTY
    await send({"type": "http.response.start", "status": status, "headers": [*headers, length]})
    await send({"type": "http.response.body", "body": body})


def error_headers(exc: GarrisonError, request_id: str | None = None) -> RawHeaders:
    headers = [(k.lower().encode(), header_value(v)) for k, v in problem_headers(exc).items()]
    headers.append((b"content-type", CONTENT_TYPE.encode()))
    if request_id:
        headers.append((b"x-request-id", request_id.encode()))
    return headers


async def send_error(send: Send, exc: GarrisonError, request_id: str | None = None) -> None:
    """``exc`` as problem+json (401 with ``WWW-Authenticate``, 403 with reasons, 429 ...)."""
    body = problem_body(exc.status, exc.title, exc.detail, code=exc.code, reasons=exc.reasons)
    await send_response(send, exc.status, error_headers(exc, request_id), body)
