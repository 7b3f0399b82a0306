"""The ``--url``'s TLS certificate: trusted, and not about to expire (seed 004's monthly review)."""

from __future__ import annotations

import socket
import ssl
from urllib.parse import urlsplit

from garrison.doctor.context import DoctorContext
from garrison.doctor.model import Outcome, Skip, failed, passed, warned

DAY = 86400.0
WARN_DAYS = 30
FAIL_DAYS = 7


def certificate_expiry(url: str, timeout: float = 5.0) -> float:
    """``notAfter`` (UNIX seconds) of the certificate the host presents, verified as browsers do;
    ``ssl.SSLError`` when it does not verify."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    context = ssl.create_default_context()
    with (
        socket.create_connection((host, parts.port or 443), timeout=timeout) as raw,
        context.wrap_socket(raw, server_hostname=host) as tls,
    ):
        cert = tls.getpeercert()
    not_after = cert.get("notAfter") if cert else None
    if not isinstance(not_after, str):
        raise ssl.SSLError("the server presented no certificate")
    return float(ssl.cert_time_to_seconds(not_after))


def check(ctx: DoctorContext) -> Outcome:
    ctx.http()
    if not ctx.https or ctx.base_url is None:
        raise Skip("the --url is plain HTTP")
    try:
        expiry = certificate_expiry(ctx.base_url)
    except ssl.SSLError as exc:
        return failed(f"the certificate does not verify: {exc}")
    return judge_expiry(expiry, ctx.clock())


def judge_expiry(not_after: float, now: float) -> Outcome:
    days = (not_after - now) / DAY
    if days < 0:
        return failed(f"the certificate expired {-days:.0f} day(s) ago")
    if days < FAIL_DAYS:
        return failed(f"the certificate expires in {days:.1f} day(s)")
    if days < WARN_DAYS:
        return warned(f"the certificate expires in {days:.0f} days")
    return passed(f"the certificate is valid for {days:.0f} more days")
