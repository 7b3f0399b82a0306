"""Edge checks: headers, CORS, limiter, proxies, HTTPS, size caps, error bodies (E1-E7)."""

from __future__ import annotations

import ipaddress

import httpx

from garrison.config.checks import production_problems
from garrison.doctor import probe, tls
from garrison.doctor.context import DoctorContext
from garrison.doctor.model import Area, Outcome, Skip, failed, passed, setting_on, skipped, warned
from garrison.doctor.registry import Checks

checks = Checks(Area.EDGE)

MIB = 1 << 20
#: Caps above this are reported: a body that large is rarely what an API means to accept.
LARGE_CAP = 16 * MIB
#: A trusted-proxy network this wide trusts much of the internet to say who the client is.
MIN_PROXY_PREFIX = {4: 8, 6: 32}
EVIL_ORIGIN = "https://evil.example"


# -- configuration ------------------------------------------------------------------------------
@checks.add("edge.hsts-setting")
def hsts_setting(ctx: DoctorContext) -> Outcome:
    return setting_on(
        ctx.settings.enable_hsts, "ENABLE_HSTS", "browsers may be downgraded to plain HTTP"
    )


@checks.add("edge.cors-setting")
def cors_setting(ctx: DoctorContext) -> Outcome:
    found = [p for p in production_problems(ctx.settings) if p.startswith("GARRISON_CORS_ORIGINS")]
    if found:
        return failed("; ".join(found))
    origins = ctx.settings.cors_origins
    if not origins:
        return passed("no cross-origin access allowed")
    return passed(f"{len(origins)} allowed origin(s): {', '.join(origins)}")


@checks.add("edge.rate-limiter")
def rate_limiter(ctx: DoctorContext) -> Outcome:
    s = ctx.settings
    found = [p for p in production_problems(s) if p.startswith("REDIS_URL")]
    if found:
        return failed("; ".join(found))
    if s.use_redis_limiter:
        return passed("Redis limiter on")
    if s.redis_url:
        return warned("REDIS_URL is set but USE_REDIS_LIMITER is off: limits are per process")
    return warned(
        "in-memory limiter: fine for one process; several workers or replicas each count alone"
    )


@checks.add("edge.trusted-proxies")
def trusted_proxies(ctx: DoctorContext) -> Outcome:
    proxies = ctx.settings.trusted_proxies
    if not proxies:
        return warned(
            "no trusted proxies: behind a proxy, every client would share its address "
            "(rate limits, audit)"
        )
    wide = [p for p in proxies if _too_wide(p)]
    if wide:
        return failed(f"trusts {', '.join(wide)}: anyone can forge X-Forwarded-For")
    return passed(f"trusted: {', '.join(proxies)}")


def _too_wide(cidr: str) -> bool:
    try:
        net = ipaddress.ip_network(cidr.strip(), strict=False)
    except ValueError:
        return False  # refused by the settings already
    return net.prefixlen < MIN_PROXY_PREFIX[net.version]


@checks.add("edge.force-https")
def force_https(ctx: DoctorContext) -> Outcome:
    mode = ctx.settings.force_https
    if mode == "off":
        return warned("GARRISON_FORCE_HTTPS is off: fine only if the proxy in front enforces HTTPS")
    return passed(f"GARRISON_FORCE_HTTPS={mode}")


@checks.add("edge.body-caps")
def body_caps(ctx: DoctorContext) -> Outcome:
    s = ctx.settings
    large = [
        f"{n}={v}"
        for n, v in (
            ("GARRISON_MAX_BODY_BYTES", s.max_body_bytes),
            ("BUS_MAX_BYTES", s.bus_max_bytes),
        )
        if v > LARGE_CAP
    ]
    if large:
        return warned(f"caps above {LARGE_CAP // MIB} MiB: {', '.join(large)}")
    return passed(f"default {s.max_body_bytes} bytes, bus {s.bus_max_bytes} bytes")


@checks.add("edge.csp-connect-src")
def csp_connect_src(ctx: DoctorContext) -> Outcome:
    sources = ctx.settings.csp_connect_src
    loose = [s for s in sources if s in {"*", "http:", "https:", "ws:", "wss:"}]
    if loose:
        return warned(f"connect-src allows {', '.join(loose)}: any host")
    return passed(f"connect-src {' '.join(sources)}")


# -- live ---------------------------------------------------------------------------------------
REQUIRED_HEADERS = {
    "x-content-type-options": "nosniff",
    "referrer-policy": None,
    "cross-origin-opener-policy": None,
    "cross-origin-embedder-policy": None,
    "cross-origin-resource-policy": None,
}


@checks.add("edge.security-headers")
def security_headers(ctx: DoctorContext) -> Outcome:
    return judge_security_headers(probe.get(ctx, "/healthz"))


def judge_security_headers(response: httpx.Response) -> Outcome:
    h = response.headers
    missing = [
        f"{name}: {want}" if want else name
        for name, want in REQUIRED_HEADERS.items()
        if not h.get(name) or (want and h[name].strip().lower() != want)
    ]
    csp = h.get("content-security-policy", "")
    directives = {d.strip().split(" ")[0].lower() for d in csp.split(";") if d.strip()}
    missing += [f"CSP {d}" for d in ("connect-src", "frame-ancestors") if d not in directives]
    if missing:
        return failed(f"missing or wrong: {', '.join(missing)}")
    return passed("CSP (connect-src, frame-ancestors), COOP, COEP, CORP, nosniff, Referrer-Policy")


@checks.add("edge.hsts")
def hsts(ctx: DoctorContext) -> Outcome:
    ctx.http()  # no --url: skipped for that reason first
    if not ctx.https:
        raise Skip("the --url is plain HTTP; HSTS applies to HTTPS only")
    return judge_hsts(probe.get(ctx, "/healthz"))


def judge_hsts(response: httpx.Response) -> Outcome:
    value = response.headers.get("strict-transport-security", "")
    if "max-age=" not in value.lower():
        return failed("no Strict-Transport-Security header over HTTPS")
    return passed(f"Strict-Transport-Security: {value}")


@checks.add("edge.tls-certificate")
def tls_certificate(ctx: DoctorContext) -> Outcome:
    return tls.check(ctx)


@checks.add("edge.cors-preflight")
def cors_preflight(ctx: DoctorContext) -> Outcome:
    headers = {
        "Origin": EVIL_ORIGIN,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type",
    }
    preflight = probe.request(ctx, "OPTIONS", "/auth/login", headers=headers)
    simple = probe.get(ctx, "/healthz", headers={"Origin": EVIL_ORIGIN})
    return judge_cors(preflight, simple)


def judge_cors(*responses: httpx.Response) -> Outcome:
    for response in responses:
        allowed = response.headers.get("access-control-allow-origin")
        if allowed in ("*", EVIL_ORIGIN):
            what = "a wildcard" if allowed == "*" else "the origin echoed"
            return failed(f"{probe.status_line(response)} from {EVIL_ORIGIN}: {what}")
    return passed(f"no Access-Control-Allow-Origin for {EVIL_ORIGIN}")


@checks.add("edge.forwarded-headers")
def forwarded_headers(ctx: DoctorContext) -> Outcome:
    ctx.http()
    if ctx.https:
        raise Skip(
            "the --url is HTTPS: a forged X-Forwarded-Proto cannot be told apart from outside"
        )
    plain = probe.get(ctx, "/auth/me")
    if not _refuses_plain_http(plain):
        raise Skip(
            "plain HTTP is served here, so a forged X-Forwarded-* has no visible effect; "
            "see edge.trusted-proxies"
        )
    forged = probe.get(
        ctx, "/auth/me", headers={"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.7"}
    )
    return judge_forwarded(plain, forged)


def _refuses_plain_http(response: httpx.Response) -> bool:
    return response.is_redirect and response.headers.get("location", "").startswith("https:")


def judge_forwarded(plain: httpx.Response, forged: httpx.Response) -> Outcome:
    if _refuses_plain_http(forged) or forged.status_code == plain.status_code:
        return passed("plain HTTP is redirected to HTTPS even with a forged X-Forwarded-Proto")
    return failed(
        f"a forged X-Forwarded-Proto: https turned {plain.status_code} into "
        f"{forged.status_code}: the server believes headers from any client"
    )


@checks.add("edge.body-limit")
def body_limit(ctx: DoctorContext) -> Outcome:
    size = max(MIB, ctx.settings.max_body_bytes) + 1
    if size > LARGE_CAP:
        return skipped(
            f"GARRISON_MAX_BODY_BYTES is {ctx.settings.max_body_bytes}; not sending that much"
        )
    try:
        response = probe.request(
            ctx,
            "POST",
            "/auth/login",
            content=b"x" * size,
            headers={"Content-Type": "application/json"},
        )
    except httpx.WriteError:
        return passed(f"a {size}-byte body was cut off by the server before it was sent")
    return judge_body_limit(response, size)


def judge_body_limit(response: httpx.Response, size: int) -> Outcome:
    if response.status_code == 413:
        return passed(f"a {size}-byte body to /auth/login got 413")
    return failed(f"a {size}-byte body to /auth/login got {response.status_code}, not 413")


@checks.add("edge.problem-json")
def problem_json(ctx: DoctorContext) -> Outcome:
    return judge_problem(probe.get(ctx, f"/garrison-doctor-{ctx.nonce}"))


def judge_problem(response: httpx.Response) -> Outcome:
    body = probe.json_body(response)
    line = probe.status_line(response)
    if probe.media_type(response) != probe.PROBLEM_JSON or not isinstance(body, dict):
        return failed(
            f"{line} with {probe.media_type(response) or 'no content type'}, "
            "not application/problem+json"
        )
    missing = [f for f in ("type", "title", "status") if f not in body]
    if missing:
        return failed(f"{line}: problem body lacks {', '.join(missing)}")
    if "Traceback" in response.text:
        return failed(f"{line}: the body carries a stack trace")
    return passed(f"{line} as application/problem+json")
