"""Operations checks: production mode, database, migrations, Redis, backups, health, metrics
(C2, C3, O1, O2, L8, Z5)."""

from __future__ import annotations

import importlib.util
from urllib.parse import parse_qs, urlsplit

import httpx
import redis

from garrison.config import GENERATED_SECRETS
from garrison.config.checks import production_problems
from garrison.doctor import probe
from garrison.doctor.context import DoctorContext
from garrison.doctor.identity import judge_protected
from garrison.doctor.model import Area, Outcome, Skip, failed, passed, skipped, warned
from garrison.doctor.registry import Checks
from garrison.storage import migrate

checks = Checks(Area.OPERATIONS)

#: Production refusals that have a check of their own; any other one lands in ``other-refusals``.
CLAIMED = frozenset({*GENERATED_SECRETS, "DATABASE_URL", "GARRISON_CORS_ORIGINS", "REDIS_URL"})


@checks.add(
    "operations.production-mode",
    "Production mode is on",
    seeds=("001", "003"),
    reqs=("C1", "C2", "C3"),
    fix="set GARRISON_ENV=production (it refuses weak settings and never reads .env)",
)
def production_mode(ctx: DoctorContext) -> Outcome:
    if ctx.settings.production:
        return passed("GARRISON_ENV=production")
    return failed("development mode: weak settings are accepted and .env is read")


@checks.add(
    "operations.database-url",
    "DATABASE_URL is PostgreSQL over TLS",
    seeds=("001", "004"),
    reqs=("C3",),
    fix="set DATABASE_URL=postgresql://USER@HOST/DB?sslmode=verify-full",
)
def database_url(ctx: DoctorContext) -> Outcome:
    found = [p for p in production_problems(ctx.settings) if p.startswith("DATABASE_URL")]
    if found:
        return failed("; ".join(found))
    return passed("PostgreSQL with sslmode " + _sslmode(ctx.settings.database_url))


def _sslmode(url: str) -> str:
    return parse_qs(urlsplit(url).query).get("sslmode", ["?"])[-1]


@checks.add(
    "operations.other-refusals",
    "Nothing else production would refuse",
    seeds=("001", "003"),
    reqs=("C2",),
    fix="fix each named setting; `garrison serve` in production refuses to start until then",
)
def other_refusals(ctx: DoctorContext) -> Outcome:
    found = [p for p in production_problems(ctx.settings) if p.split(":")[0] not in CLAIMED]
    if found:
        return failed("; ".join(found))
    return passed("no other setting would stop a production start")


@checks.add(
    "operations.database-reachable",
    "The database answers",
    seeds=("001", "004"),
    reqs=("L8", "C3"),
    fix="check DATABASE_URL, the network path and the credentials",
)
def database_reachable(ctx: DoctorContext) -> Outcome:
    try:
        db = ctx.database()
    except Skip as exc:
        if ctx.database_url.startswith("sqlite"):
            raise
        return failed(str(exc))
    return passed(f"{db.dialect} answers")


@checks.add(
    "operations.migrations",
    "Schema migrated, no drift",
    seeds=("001", "003"),
    reqs=("O2",),
    fix="run `garrison db upgrade` from your deploy pipeline, then `garrison db check`",
)
def migrations(ctx: DoctorContext) -> Outcome:
    db = ctx.database()
    problems = migrate.check(db)
    current = migrate.current_revision(db)
    if problems:
        return failed(f"at {current or 'no revision'}: {'; '.join(problems)}")
    return passed(f"at {current}, in step with the code")


@checks.add(
    "operations.redis",
    "Redis answers",
    seeds=("000", "001"),
    reqs=("E3", "L8"),
    fix="check REDIS_URL, the network path and the credentials",
)
def redis_reachable(ctx: DoctorContext) -> Outcome:
    url = ctx.settings.redis_url
    if not url:
        return skipped("REDIS_URL unset")
    client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        return failed(f"no answer: {exc}")
    finally:
        client.close()
    return passed("PING answered")


@checks.add(
    "operations.backups",
    "Backups are taken and restores tested",
    seeds=("000", "001", "002", "004"),
    reqs=("O1",),
    fix="schedule `garrison backup create FILE` (encrypted), store it off the host, and test "
    "`garrison backup restore FILE` regularly",
)
def backups(ctx: DoctorContext) -> Outcome:
    if importlib.util.find_spec("garrison.cli.backup") is None:
        raise Skip("backup command unavailable in this build")
    return warned("Garrison cannot see your backup schedule or your last restore test")


@checks.add(
    "operations.metrics-setting",
    "/metrics needs an admin",
    seeds=("001",),
    reqs=("Z5", "L8"),
    fix="unset GARRISON_METRICS_PUBLIC, or make sure only the scraper can reach the port",
)
def metrics_setting(ctx: DoctorContext) -> Outcome:
    if ctx.settings.metrics_public:
        return warned("GARRISON_METRICS_PUBLIC is on: only the network keeps /metrics private")
    return passed("admin JWT required for /metrics")


# -- live ---------------------------------------------------------------------------------------
@checks.add(
    "operations.healthz",
    "/healthz is minimal",
    seeds=("001", "002"),
    reqs=("L8",),
    fix='serve /healthz from Garrison: 200 {"status":"ok"} and nothing else',
    live=True,
)
def healthz(ctx: DoctorContext) -> Outcome:
    return judge_healthz(probe.get(ctx, "/healthz"))


def judge_healthz(response: httpx.Response) -> Outcome:
    body = probe.json_body(response)
    if response.status_code == 200 and body == {"status": "ok"}:
        return passed('200 {"status":"ok"}')
    return failed(f"{probe.status_line(response)} with {response.text[:120]!r}")


@checks.add(
    "operations.readyz",
    "/readyz reports the database ready",
    seeds=("001", "002"),
    reqs=("L8",),
    fix="check DATABASE_URL and REDIS_URL on the server; /readyz names the failing dependency",
    live=True,
)
def readyz(ctx: DoctorContext) -> Outcome:
    return judge_readyz(probe.get(ctx, "/readyz"))


def judge_readyz(response: httpx.Response) -> Outcome:
    body = probe.json_body(response)
    checks_ = body.get("checks") if isinstance(body, dict) else None
    if not isinstance(checks_, dict):
        return failed(f"{probe.status_line(response)}: no dependency checks in the body")
    summary = ", ".join(f"{k} {v}" for k, v in sorted(checks_.items()))
    if response.status_code != 200 or checks_.get("database") != "ok":
        return failed(f"{probe.status_line(response)}: {summary}")
    return passed(f"200: {summary}")


@checks.add(
    "operations.metrics-protected",
    "/metrics is not public",
    seeds=("001",),
    reqs=("Z5", "L8"),
    fix="unset GARRISON_METRICS_PUBLIC (admin JWT required) or restrict /metrics at the network",
    live=True,
)
def metrics_protected(ctx: DoctorContext) -> Outcome:
    return judge_protected(probe.get(ctx, "/metrics"))
