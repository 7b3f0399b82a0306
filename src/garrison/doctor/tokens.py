"""Token checks: signing-key rotation, lifetimes, JWKS, discovery, forged tokens (A2, A3, A6, A8, C5)."""

from __future__ import annotations

import time
from typing import Any

import httpx
import sqlalchemy as sa

from garrison.doctor import forge, probe
from garrison.doctor.context import DoctorContext
from garrison.doctor.model import Area, Outcome, Skip, Status, failed, passed, warned
from garrison.doctor.registry import Checks
from garrison.keys.keyring import DAY, Keyring
from garrison.storage.schema import users

checks = Checks(Area.TOKENS)

#: What a JWKS must never contain: private RSA/EC/OKP parts, or a symmetric key.
PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
ASYMMETRIC = frozenset(
    {
        "RS256",
        "RS384",
        "RS512",
        "PS256",
        "PS384",
        "PS512",
        "ES256",
        "ES384",
        "ES512",
        "EdDSA",
        "Ed25519",
    }
)
#: Beyond this an access token outlives the "short-lived" advice of seed 004 (1-2 h at most).
LONG_ACCESS_TTL = 3600


@checks.add("tokens.key-rotation")
def key_rotation(ctx: DoctorContext) -> Outcome:
    keys = _keyring(ctx).list()
    active = [k for k in keys if k.status == "active"]
    if not active:
        return warned("no active signing key yet (the first start creates one)")
    newest = max(active, key=lambda k: k.created_at)
    age = (ctx.clock() - newest.created_at) / DAY
    due = time.strftime("%Y-%m-%d", time.gmtime(newest.rotate_by))
    if any(k.overdue for k in active):
        return failed(f"key {newest.kid} is {age:.0f} days old, past its rotate-by date {due}")
    return passed(f"key {newest.kid} ({newest.alg}) is {age:.0f} days old; rotate by {due}")


def _keyring(ctx: DoctorContext) -> Keyring:
    """A keyring for listing only: it reads key metadata, never unseals a private key, so the
    doctor needs no ``GARRISON_KEYRING_KEY``."""
    settings = ctx.settings
    return Keyring(
        ctx.database(),
        b"",
        alg=settings.signing_alg,
        verify_window=settings.access_ttl + settings.clock_skew,
        rotate_days=settings.key_rotate_days,
        clock=ctx.clock,
    )


#: ASVS 5.0 Appendix C lists RSASSA-PKCS1-v1_5 as disallowed: a legacy opt-in, never a default.
LEGACY_ALGS = frozenset({"RS256"})


@checks.add("tokens.signing-algorithm")
def signing_algorithm(ctx: DoctorContext) -> Outcome:
    """RS256 (configured, or still the live key) fails in production and warns elsewhere: it runs
    (a deliberate legacy opt-in for a consumer that knows nothing else), but such a deployment does
    not meet ASVS 11.6.1, and the fix is one overlapping rotation with no token broken."""
    configured = ctx.settings.signing_alg
    try:
        live = {k.alg for k in _keyring(ctx).list() if k.status == "active"}
    except Skip:  # no database here: the setting alone is judged
        live = set()
    legacy = sorted(({configured} | live) & LEGACY_ALGS)
    if not legacy:
        shown = ", ".join(sorted(live)) or "none yet"
        return passed(f"GARRISON_SIGNING_ALG={configured}; live signing key: {shown}")
    where = [f"GARRISON_SIGNING_ALG={configured}"] if configured in LEGACY_ALGS else []
    where += [f"the live signing key is {a}" for a in sorted(live & LEGACY_ALGS)]
    finding = f"{'; '.join(where)}: RSASSA-PKCS1-v1_5, disallowed by ASVS 5.0 (Appendix C)"
    return failed(finding) if ctx.settings.production else warned(finding)


@checks.add("tokens.access-ttl")
def access_ttl(ctx: DoctorContext) -> Outcome:
    ttl = ctx.settings.access_ttl
    if ttl > LONG_ACCESS_TTL:
        return warned(f"GARRISON_ACCESS_TTL is {ttl} s: a stolen token stays good that long")
    return passed(f"GARRISON_ACCESS_TTL is {ttl} s")


# -- live ---------------------------------------------------------------------------------------
def jwks_keys(ctx: DoctorContext) -> list[dict[str, Any]]:
    response = probe.get(ctx, "/.well-known/jwks.json")
    body = probe.json_body(response)
    if response.status_code != 200 or not isinstance(body, dict):
        raise Skip(f"no JWKS to work with ({probe.status_line(response)})")
    keys = body.get("keys")
    return [k for k in keys if isinstance(k, dict)] if isinstance(keys, list) else []


@checks.add("tokens.jwks")
def jwks(ctx: DoctorContext) -> Outcome:
    response = probe.get(ctx, "/.well-known/jwks.json")
    return judge_jwks(response)


def judge_jwks(response: httpx.Response) -> Outcome:
    body = probe.json_body(response)
    if response.status_code != 200 or not isinstance(body, dict):
        return failed(f"{probe.status_line(response)}: no JSON key set")
    keys = body.get("keys")
    if not isinstance(keys, list) or not keys:
        return failed("the JWKS has no keys")
    problems: list[str] = []
    for n, key in enumerate(keys):
        if not isinstance(key, dict):
            problems.append(f"key {n} is not an object")
            continue
        name = key.get("kid") or f"#{n}"
        leaked = sorted(PRIVATE_MEMBERS & key.keys())
        if leaked:
            problems.append(f"key {name} publishes private members {', '.join(leaked)}")
        missing = [m for m in ("kid", "alg", "use") if not key.get(m)]
        if missing:
            problems.append(f"key {name} lacks {', '.join(missing)}")
        if key.get("alg") and key.get("alg") not in ASYMMETRIC:
            problems.append(f"key {name} has non-asymmetric alg {key.get('alg')!r}")
    if problems:
        fix = "rotate at once (`garrison keys rotate --emergency`) if a private part was published"
        return failed("; ".join(problems), fix if any("private" in p for p in problems) else None)
    return passed(f"{len(keys)} public key(s), each with kid, alg and use")


@checks.add("tokens.discovery")
def discovery(ctx: DoctorContext) -> Outcome:
    response = probe.get(ctx, "/.well-known/openid-configuration")
    return judge_discovery(response, ctx.issuer)


def judge_discovery(response: httpx.Response, issuer: str) -> Outcome:
    body = probe.json_body(response)
    if response.status_code != 200 or not isinstance(body, dict):
        return failed(f"{probe.status_line(response)}: no discovery document")
    problems: list[str] = []
    if body.get("issuer") != issuer:
        problems.append(f"issuer {body.get('issuer')!r} is not GARRISON_ISSUER {issuer!r}")
    if not body.get("jwks_uri"):
        problems.append("no jwks_uri")
    listed = body.get("id_token_signing_alg_values_supported")
    algs = [str(a) for a in listed] if isinstance(listed, list) else []
    weak = [a for a in algs if a not in ASYMMETRIC]
    if not algs:
        problems.append("no id_token_signing_alg_values_supported")
    elif weak:
        problems.append(f"advertises non-asymmetric algorithms {', '.join(weak)}")
    if problems:
        return failed("; ".join(problems))
    return passed(f"issuer {issuer}, algorithms {', '.join(algs)}")


def _forged_claims(ctx: DoctorContext) -> dict[str, Any]:
    """Claims a real token would carry, for a real admin when the database names one: a server that
    skipped the signature but checked the user would otherwise refuse the forgery for the wrong
    reason and pass the check."""
    claims = forge.claims(ctx.issuer, ctx.settings.audience, ctx.clock())
    admin = _some_admin(ctx)
    if admin is not None:
        claims["sub"], tenant = admin
        if tenant:
            claims["tenant"] = tenant
    return claims


def _some_admin(ctx: DoctorContext) -> tuple[str, str | None] | None:
    try:
        db = ctx.database()
    except Skip:
        return None
    query = sa.select(users.c.id, users.c.tenant, users.c.roles).where(users.c.active.is_(True))
    with db.begin() as conn:
        for user_id, tenant, roles in conn.execute(query.order_by(users.c.created_at)):
            if "admin" in (roles or ()):
                return str(user_id), tenant
    return None


@checks.add("tokens.alg-none")
def alg_none(ctx: DoctorContext) -> Outcome:
    try:
        keys = jwks_keys(ctx)
    except Skip:
        keys = []
    kid = str(keys[0].get("kid", "")) if keys else None  # a real kid, so only "none" is wrong
    token = forge.unsigned(_forged_claims(ctx), kid)
    response = probe.get(ctx, "/auth/me", headers=probe.bearer(token))
    return judge_forged(response, "an alg=none token")


@checks.add("tokens.alg-confusion")
def alg_confusion(ctx: DoctorContext) -> Outcome:
    keys = [k for k in jwks_keys(ctx) if k.get("kty") in {"RSA", "EC", "OKP"}]
    if not keys:
        raise Skip("no public key in the JWKS to forge with")
    outcomes = [_try_confusion(ctx, key) for key in keys]
    return next((o for o in outcomes if o.status is not Status.PASS), outcomes[0])


def _try_confusion(ctx: DoctorContext, key: dict[str, Any]) -> Outcome:
    token = forge.hs256_with_public_key(_forged_claims(ctx), key)
    response = probe.get(ctx, "/auth/me", headers=probe.bearer(token))
    return judge_forged(response, f"an HS256 token keyed with public key {key.get('kid')}")


def judge_forged(response: httpx.Response, what: str) -> Outcome:
    if response.status_code == 401:
        return passed(f"{what} got 401")
    if response.status_code < 400:
        return failed(f"{what} was ACCEPTED ({probe.status_line(response)}): anyone can sign in")
    return failed(f"{what} got {response.status_code}, not 401")


@checks.add("tokens.query-string")
def query_string(ctx: DoctorContext) -> Outcome:
    response = probe.get(ctx, "/healthz", params={"access_token": "doctor-probe"})
    return judge_query_token(response)


def judge_query_token(response: httpx.Response) -> Outcome:
    """On a public path, a refused query token shows as a 4xx where the bare path is 200."""
    if 400 <= response.status_code < 500:
        return passed(f"/healthz?access_token=... got {response.status_code}")
    return failed(
        f"/healthz?access_token=... got {response.status_code}: the token was not refused"
    )
