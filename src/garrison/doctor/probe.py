"""Small HTTP helpers for the live checks: one request each, to the ``--url`` deployment only."""

from __future__ import annotations

import json
import secrets
from typing import Any

import httpx

from garrison.doctor.context import DoctorContext
from garrison.doctor.model import Skip

PROBLEM_JSON = "application/problem+json"
#: Fields of an error body that differ per request by design, ignored when comparing two bodies.
PER_REQUEST_FIELDS = frozenset({"instance", "request_id", "trace_id", "timestamp"})


def request(ctx: DoctorContext, method: str, path: str, **kwargs: Any) -> httpx.Response:
    """One request; once the deployment could not be reached, later checks SKIP instead of each
    failing with the same connection error."""
    client = ctx.http()
    if ctx.unreachable is not None:
        raise Skip(f"{ctx.base_url} unreachable ({ctx.unreachable})")
    try:
        return client.request(method, path, **kwargs)
    except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
        ctx.unreachable = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise


def get(ctx: DoctorContext, path: str, **kwargs: Any) -> httpx.Response:
    return request(ctx, "GET", path, **kwargs)


def json_body(response: httpx.Response) -> Any:
    """The parsed body, or None when it is not JSON."""
    try:
        return response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None


def media_type(response: httpx.Response) -> str:
    value: str = response.headers.get("content-type", "")
    return value.split(";", maxsplit=1)[0].strip().lower()


def comparable(response: httpx.Response) -> tuple[int, str, Any]:
    """Status, media type and body minus per-request fields: what must match between two failures."""
    body = json_body(response)
    if isinstance(body, dict):
        body = {k: v for k, v in body.items() if k not in PER_REQUEST_FIELDS}
    elif body is None:
        body = response.text
    return response.status_code, media_type(response), body


def random_username() -> str:
    """A name no real account has, so a failed login cannot lock anyone out."""
    return f"doctor-probe-{secrets.token_hex(8)}"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def status_line(response: httpx.Response) -> str:
    return f"{response.request.method} {response.request.url.path} -> {response.status_code}"
