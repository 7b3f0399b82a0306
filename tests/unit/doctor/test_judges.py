"""Judges of live responses that a plain-HTTP test server cannot exercise end to end (O4, E1, A13)."""

from __future__ import annotations

import httpx
import pytest

from garrison.doctor import Status
from garrison.doctor.edge import judge_forwarded, judge_hsts, judge_security_headers
from garrison.doctor.identity import judge_throttled
from garrison.doctor.model import Outcome


def response(status: int = 200, headers: dict[str, str] | None = None) -> httpx.Response:
    request = httpx.Request("GET", "https://auth.example/healthz")
    return httpx.Response(status, headers=headers or {}, request=request)


def status(outcome: Outcome) -> Status:
    return outcome.status


@pytest.mark.req("O4", "E1")
def test_hsts_over_https() -> None:
    sent = {"Strict-Transport-Security": "max-age=63072000; includeSubDomains"}
    assert status(judge_hsts(response(headers=sent))) is Status.PASS
    assert status(judge_hsts(response())) is Status.FAIL
    assert status(judge_hsts(response(headers={"Strict-Transport-Security": "x"}))) is Status.FAIL


GOOD_HEADERS = {
    "content-security-policy": "default-src 'self'; frame-ancestors 'none'; connect-src 'self'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-embedder-policy": "require-corp",
    "cross-origin-resource-policy": "same-origin",
}


@pytest.mark.req("O4", "E1")
@pytest.mark.parametrize("drop", sorted(GOOD_HEADERS))
def test_each_missing_security_header_fails(drop: str) -> None:
    assert status(judge_security_headers(response(headers=GOOD_HEADERS))) is Status.PASS
    headers = {k: v for k, v in GOOD_HEADERS.items() if k != drop}
    found = judge_security_headers(response(headers=headers))
    named = "CSP connect-src" if drop == "content-security-policy" else drop
    assert found.status is Status.FAIL
    assert named in found.finding


@pytest.mark.req("O4", "E1")
def test_csp_without_connect_src_or_frame_ancestors_fails() -> None:
    headers = {**GOOD_HEADERS, "content-security-policy": "default-src 'self'"}
    found = judge_security_headers(response(headers=headers))
    assert found.finding == "missing or wrong: CSP connect-src, CSP frame-ancestors"
    sniffing = {**GOOD_HEADERS, "x-content-type-options": "sniff-away"}
    assert status(judge_security_headers(response(headers=sniffing))) is Status.FAIL


@pytest.mark.req("O4", "A13")
def test_throttle_without_retry_after_fails() -> None:
    assert status(judge_throttled(response(429, {"Retry-After": "60"}), 6)) is Status.PASS
    assert status(judge_throttled(response(429), 6)) is Status.FAIL


@pytest.mark.req("O4", "E5", "E6")
def test_forwarded_proto_believed_fails() -> None:
    redirect = response(308, {"location": "https://auth.example/auth/me"})
    assert status(judge_forwarded(redirect, redirect)) is Status.PASS
    assert status(judge_forwarded(redirect, response(401))) is Status.FAIL


@pytest.mark.req("O4", "E6")
def test_certificate_expiry() -> None:
    from garrison.doctor.tls import DAY, judge_expiry

    now = 1_800_000_000.0
    assert judge_expiry(now + 90 * DAY, now).status is Status.PASS
    assert judge_expiry(now + 20 * DAY, now).status is Status.WARN
    assert judge_expiry(now + 3 * DAY, now).status is Status.FAIL
    assert judge_expiry(now - DAY, now).finding == "the certificate expired 1 day(s) ago"
