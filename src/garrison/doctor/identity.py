"""Identity and access checks: secrets, operator accounts, default passwords, API-key and OIDC
hygiene, the policy set's own tests, and (live) logins and admin endpoints.

Requirements: A1, A7, A10, A11, A13, A14, C1, C2, C5, Z3, Z4, Z5.
"""

from __future__ import annotations

import time
from urllib.parse import urlsplit

import httpx
import sqlalchemy as sa

from garrison.app import policy_config
from garrison.config import GENERATED_SECRETS, SECRET_SETTINGS
from garrison.config.checks import KNOWN_WEAK, production_problems, secret_problem
from garrison.config.secret_values import secret_values
from garrison.doctor import probe
from garrison.doctor.context import DoctorContext
from garrison.doctor.model import Area, Outcome, Skip, failed, passed, setting_on, skipped, warned
from garrison.doctor.registry import Checks
from garrison.identity.passwords import verify_password
from garrison.keys.keyring import DAY
from garrison.keys.secret_ages import SecretAges
from garrison.policy.registry import registry_for
from garrison.policy.tables import run_policy_tests
from garrison.storage.schema import api_keys, users

checks = Checks(Area.IDENTITY)

#: At most this many admin accounts get their hash tried against the known defaults: argon2id makes
#: each try cost ~20 ms on purpose, and a deployment with more admins than this has other problems.
MAX_ADMINS_TRIED = 20
ADMIN_ROLE = "admin"


@checks.add("identity.secrets")
def secrets_strong(ctx: DoctorContext) -> Outcome:
    found = [p for p in production_problems(ctx.settings) if p.split(":")[0] in GENERATED_SECRETS]
    if found:
        return failed("; ".join(found))
    return passed(f"{', '.join(SECRET_SETTINGS)} set and strong")


@checks.add("identity.secret-rotation")
def secret_rotation(ctx: DoctorContext) -> Outcome:
    ages = SecretAges(ctx.database(), rotate_days=ctx.settings.key_rotate_days, clock=ctx.clock)
    try:
        found = [a for a in ages.report(secret_values(ctx.settings)) if a.state != "unset"]
    except sa.exc.DBAPIError:
        raise Skip("no secret_fingerprints table yet (run `garrison db upgrade`)") from None
    if not found:
        raise Skip("no secret setting is configured (development key files are not tracked)")
    now = ctx.clock()
    overdue = [
        f"{a.name} first seen {(now - (a.first_seen_at or now)) / DAY:.0f} days ago"
        for a in found
        if a.overdue
    ]
    if overdue:
        return failed(f"past the {ctx.settings.key_rotate_days}-day rotation: {'; '.join(overdue)}")
    unseen = [a.name for a in found if a.state in {"unrecorded", "changed"}]
    if unseen:
        return warned(
            f"not yet recorded by a start of `garrison serve`: {', '.join(unseen)} "
            "(the first start with a value records when it was first seen)"
        )
    soonest = min((a for a in found if a.rotate_by), key=lambda a: a.rotate_by or 0.0)
    due = time.strftime("%Y-%m-%d", time.gmtime(soonest.rotate_by or now))
    return passed(f"{len(found)} secret(s) within rotation; next due: {soonest.name} by {due}")


@checks.add("identity.jwt-for-admin")
def jwt_for_admin(ctx: DoctorContext) -> Outcome:
    return setting_on(
        ctx.settings.jwt_required_for_admin,
        "REQUIRE_JWT_FOR_ADMIN",
        "an API key alone can act as admin",
    )


@checks.add("identity.mfa-for-admin")
def mfa_for_admin(ctx: DoctorContext) -> Outcome:
    if ctx.settings.mfa_required_for_admin:
        return passed("GARRISON_REQUIRE_MFA_FOR_ADMIN is on")
    if not ctx.settings.production:
        return warned("GARRISON_REQUIRE_MFA_FOR_ADMIN is off (development default)")
    return failed(
        "GARRISON_REQUIRE_MFA_FOR_ADMIN is off in production: a stolen admin password alone "
        "is enough to act as admin"
    )


@checks.add("identity.external-idp-secrets")
def external_idp_secrets(ctx: DoctorContext) -> Outcome:
    idps = {name: idp for name, idp in ctx.settings.external_idps.items() if idp.hs256_secret_env}
    if not idps:
        return skipped("no external IdP with an HS256 secret configured")
    found: list[str] = []
    for name, idp in sorted(idps.items()):
        problem = secret_problem(idp.hs256_secret_env, ctx.environ.get(idp.hs256_secret_env))
        if problem:
            found.append(f"{name}: {problem}")
        if not idp.audience:
            found.append(f"{name}: no audience set, so any token of that IdP is accepted")
    if found:
        return failed("; ".join(found))
    return passed(f"{len(idps)} external IdP secret(s) strong, audiences set")


def _admins(ctx: DoctorContext) -> list[tuple[str, str | None]]:
    """``(username, password hash)`` of active admin accounts, platform-wide."""
    db = ctx.database()
    query = (
        sa.select(users.c.username, users.c.roles, users.c.password_hash)
        .where(users.c.active.is_(True))
        .order_by(users.c.username)
    )
    with db.begin() as conn:
        rows = conn.execute(query).all()
    return [(name, pw) for name, roles, pw in rows if ADMIN_ROLE in (roles or ())]


@checks.add("identity.admin-exists")
def admin_exists(ctx: DoctorContext) -> Outcome:
    count = len(_admins(ctx))
    if count == 0:
        return warned("no active admin account: nobody can administer this deployment")
    return passed(f"{count} active admin account(s)")


def _default_password(username: str, stored: str | None) -> str | None:
    for candidate in sorted(KNOWN_WEAK | {username}):
        if verify_password(stored, candidate):
            return candidate
    return None


@checks.add("identity.default-passwords")
def default_passwords(ctx: DoctorContext) -> Outcome:
    admins = [(name, pw) for name, pw in _admins(ctx) if pw is not None]
    if not admins:
        return skipped("no admin account with a password")
    tried = admins[:MAX_ADMINS_TRIED]
    weak = [name for name, pw in tried if _default_password(name, pw) is not None]
    if weak:
        fix = f"`garrison users disable {weak[0]}`, then create a new admin with a strong password"
        return failed(f"admin account(s) with a default password: {', '.join(weak)}", fix)
    more = f" (first {MAX_ADMINS_TRIED} of {len(admins)})" if len(admins) > len(tried) else ""
    return passed(f"{len(tried)} admin password(s) tried against known defaults{more}; none match")


@checks.add("identity.api-key-rotation")
def api_key_rotation(ctx: DoctorContext) -> Outcome:
    now = ctx.clock()
    limit = now - ctx.settings.key_rotate_days * DAY
    query = sa.select(api_keys.c.name, api_keys.c.created_at, api_keys.c.expires_at).where(
        api_keys.c.revoked_at.is_(None),
        sa.or_(api_keys.c.expires_at.is_(None), api_keys.c.expires_at > now),
    )
    with ctx.database().begin() as conn:
        live = conn.execute(query).all()
    if not live:
        return skipped("no live API keys")
    forever = [name or "(unnamed)" for name, _, expires in live if expires is None]
    stale = [name or "(unnamed)" for name, created, _ in live if created < limit]
    found = []
    if forever:
        found.append(f"{len(forever)} never expire ({', '.join(sorted(forever)[:5])})")
    if stale:
        found.append(
            f"{len(stale)} older than {ctx.settings.key_rotate_days} days "
            f"({', '.join(sorted(stale)[:5])})"
        )
    if found:
        return warned("; ".join(found))
    return passed(f"{len(live)} live key(s), all expiring, none past rotation age")


#: Scopes an OIDC login needs (A11): who the person is, nothing of their data.
MINIMAL_SCOPES = frozenset({"openid", "email", "profile"})


@checks.add("identity.oidc")
def oidc(ctx: DoctorContext) -> Outcome:
    providers = ctx.settings.oidc
    if not providers:
        return skipped("no OIDC provider configured")
    failing: list[str] = []
    loose: list[str] = []
    for name, p in sorted(providers.items()):
        extra = sorted(set(p.scopes) - MINIMAL_SCOPES)
        if extra:
            loose.append(f"{name} asks for {', '.join(extra)}")
        if p.redirect_uri and not _https_or_loopback(p.redirect_uri):
            failing.append(f"{name}: redirect_uri {p.redirect_uri} is not https")
        if p.client_secret_env and not ctx.environ.get(p.client_secret_env):
            failing.append(f"{name}: {p.client_secret_env} is not set")
    if failing:
        return failed("; ".join(failing + loose))
    if loose:
        return warned("; ".join(loose))
    return passed(f"{len(providers)} provider(s): minimal scopes")


def _https_or_loopback(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme == "https" or parts.hostname in {"127.0.0.1", "localhost", "::1"}


@checks.add("identity.policy-tests")
def policy_tests(ctx: DoctorContext) -> Outcome:
    config = policy_config(ctx.settings)
    report = run_policy_tests(registry_for(config), config.policy_dir)
    if not report.ok:
        names = [r.case.name for r in report.failed][:5]
        detail = list(report.problems[:3]) + ([f"failing: {', '.join(names)}"] if names else [])
        return failed("; ".join(detail) or "no decision tables ran")
    return passed(f"{len(report.results)} decision(s) pass in {report.directory}")


# -- live ---------------------------------------------------------------------------------------
def _failed_login(ctx: DoctorContext) -> httpx.Response:
    body = {"username": probe.random_username(), "password": probe.random_username()}
    return probe.request(ctx, "POST", "/auth/login", json=body)


@checks.add("identity.login-uniform")
def login_uniform(ctx: DoctorContext) -> Outcome:
    first, second = _failed_login(ctx), _failed_login(ctx)
    return judge_login_failures(first, second)


def judge_login_failures(first: httpx.Response, second: httpx.Response) -> Outcome:
    if 429 in (first.status_code, second.status_code):
        raise Skip("this address is being throttled (429) after earlier failed logins; run later")
    if first.status_code != 401 or second.status_code != 401:
        return failed(
            f"failed logins answered {first.status_code} and {second.status_code}, not 401",
            "answer every bad username or password with 401 and one generic body",
        )
    if probe.comparable(first) != probe.comparable(second):
        return failed("two failed logins with different unknown usernames got different bodies")
    return passed("two failed logins (random unknown usernames) got the same 401 body")


@checks.add("identity.admin-anonymous")
def admin_anonymous(ctx: DoctorContext) -> Outcome:
    return judge_protected(probe.get(ctx, "/admin/users"))


def judge_protected(response: httpx.Response) -> Outcome:
    """401/403 without credentials passes; anything served is a FAIL."""
    line = probe.status_line(response)
    if response.status_code in (401, 403):
        return passed(f"{line} without credentials")
    if response.status_code < 400:
        return failed(f"{line} without credentials: served to anyone")
    return warned(f"{line}: not a clear refusal (expected 401 or 403)")


@checks.add("identity.login-rate-limit")
def login_rate_limit(ctx: DoctorContext) -> Outcome:
    if not ctx.aggressive:
        raise Skip("not probed without --aggressive (it sends failed logins until throttled)")
    limit = ctx.settings.login_max_failures  # per (account, address): what one prober meets
    attempts = min(limit + 3, 30)
    username = probe.random_username()
    for n in range(1, attempts + 1):
        body = {"username": username, "password": probe.random_username()}
        response = probe.request(ctx, "POST", "/auth/login", json=body)
        if response.status_code == 429:
            return judge_throttled(response, n)
    return failed(f"{attempts} failed logins for one username, none answered 429")


def judge_throttled(response: httpx.Response, attempt: int) -> Outcome:
    if not response.headers.get("retry-after"):
        return failed(
            f"throttled at attempt {attempt} but 429 has no Retry-After",
            "send Retry-After with every 429",
        )
    return passed(
        f"throttled at attempt {attempt}: 429, Retry-After {response.headers['retry-after']}"
    )
