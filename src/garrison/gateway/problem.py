"""RFC 9457 problem+json: the only shape an error ever takes on the wire (E7)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from starlette.responses import Response

from garrison.errors import GarrisonError, RateLimitedError, UnavailableError

PROBLEM_TYPE_BASE = "https://garrison.dev/problems/"
CONTENT_TYPE = "application/problem+json"


def problem_body(
    status: int,
    title: str,
    detail: str,
    *,
    code: str,
    reasons: Iterable[str] = (),
    extra: Mapping[str, Any] | None = None,
) -> bytes:
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE_BASE + code,
        "title": title,
        "status": status,
        "detail": detail,
    }
    reasons = list(reasons)
    if reasons or status == 403:
        body["reasons"] = reasons
    if extra:
        body.update(extra)
    return json.dumps(body, separators=(",", ":")).encode()


def problem_headers(exc: GarrisonError) -> dict[str, str]:
    headers: dict[str, str] = {}
    if exc.status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="garrison"'
    if isinstance(exc, RateLimitedError | UnavailableError) and exc.retry_after is not None:
        headers["Retry-After"] = str(exc.retry_after)
    if exc.status == 403 and exc.reasons:
        headers["X-Auth-Deny-Reason"] = _header_safe(exc.reasons[0])
    return headers


def _header_safe(value: str) -> str:
    return "".join(ch if 32 <= ord(ch) < 127 else "?" for ch in value)[:300]


def problem_response(exc: GarrisonError) -> Response:
    return Response(
        problem_body(exc.status, exc.title, exc.detail, code=exc.code, reasons=exc.reasons),
        status_code=exc.status,
        media_type=CONTENT_TYPE,
        headers=problem_headers(exc),
    )


def simple_problem(status: int, title: str, detail: str, code: str) -> Response:
    return Response(
        problem_body(status, title, detail, code=code), status_code=status, media_type=CONTENT_TYPE
    )
