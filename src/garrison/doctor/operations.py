"""Operations checks: production mode, database, migrations, Redis, backups, health, metrics
(C2, C3, O1, O2, L8, Z5)."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import redis

from garrison.backup import BackupError, plain_header
from garrison.config import GENERATED_SECRETS
from garrison.config.checks import production_problems
from garrison.doctor import probe
from garrison.doctor.context import DoctorContext
from garrison.doctor.identity import judge_protected
from garrison.doctor.model import Area, Outcome, Skip, failed, passed, skipped, warned
from garrison.doctor.registry import Checks
from garrison.errors import ConfigError
from garrison.keys.keyring import DAY
from garrison.storage import migrate, redis_client
from garrison.storage.redis_client import redis_target

checks = Checks(Area.OPERATIONS)

#: Production refusals that have a check of their own; any other one lands in ``other-refusals``.
CLAIMED = frozenset({*GENERATED_SECRETS, "DATABASE_URL", "GARRISON_CORS_ORIGINS", "REDIS_URL"})


@checks.add("operations.production-mode")
def production_mode(ctx: DoctorContext) -> Outcome:
    """With ``--url``, what the target shows (this shell's settings may be another deployment's);
    without, this configuration's ``GARRISON_ENV``."""
    if ctx.base_url is not None:
        discovery = probe.get(ctx, "/.well-known/openid-configuration")
        healthz = probe.get(ctx, "/healthz") if ctx.https else None
        return judge_target_mode(discovery, healthz)
    if ctx.settings.production:
        return passed("GARRISON_ENV=production")
    return failed("development mode: weak settings are accepted and .env is read")


TARGET_MODE_FIX = (
    "on the target: set GARRISON_ENV=production, GARRISON_ISSUER to the public https URL clients "
    "use, and ENABLE_HSTS=true"
)


def judge_target_mode(discovery: httpx.Response, healthz: httpx.Response | None) -> Outcome:
    """A deployment's ``GARRISON_ENV`` is not visible over HTTP; its issuer and HSTS are. An issuer
    on plain HTTP or a loopback address (the development default is ``http://127.0.0.1:8080``),
    or no HSTS over HTTPS, is a development setting on the target. ``healthz``: the answer over
    HTTPS (None for a plain-HTTP ``--url``, where HSTS does not apply)."""
    body = probe.json_body(discovery)
    issuer = body.get("issuer") if discovery.status_code == 200 and isinstance(body, dict) else None
    if not isinstance(issuer, str) or not issuer:
        return warned(
            f"{probe.status_line(discovery)}: no discovery document, so the target shows nothing "
            "of its settings",
            TARGET_MODE_FIX,
        )
    parts = urlsplit(issuer)
    signs = []
    if parts.scheme != "https":
        signs.append(f"its issuer {issuer} is plain HTTP")
    if _loopback(parts.hostname):
        signs.append(f"its issuer {issuer} is a loopback address")
    hsts = healthz.headers.get("strict-transport-security", "") if healthz is not None else None
    if hsts is not None and "max-age=" not in hsts.lower():
        signs.append("no Strict-Transport-Security over HTTPS")
    if signs:
        return warned(f"the target shows development settings: {'; '.join(signs)}", TARGET_MODE_FIX)
    shown = f"issuer {issuer}" + (", HSTS sent" if hsts is not None else "")
    return passed(
        f"the target shows production settings ({shown}); its GARRISON_ENV itself is not "
        "visible over HTTP (run the doctor with the target's configuration to check it)"
    )


def _loopback(host: str | None) -> bool:
    if not host:
        return False
    if host.lower() == "localhost" or host.lower().endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@checks.add("operations.database-url")
def database_url(ctx: DoctorContext) -> Outcome:
    found = [p for p in production_problems(ctx.settings) if p.startswith("DATABASE_URL")]
    if found:
        return failed("; ".join(found))
    return passed("PostgreSQL with sslmode " + _sslmode(ctx.settings.database_url))


def _sslmode(url: str) -> str:
    return parse_qs(urlsplit(url).query).get("sslmode", ["?"])[-1]


@checks.add("operations.other-refusals")
def other_refusals(ctx: DoctorContext) -> Outcome:
    found = [p for p in production_problems(ctx.settings) if p.split(":")[0] not in CLAIMED]
    if found:
        return failed("; ".join(found))
    return passed("no other setting would stop a production start")


@checks.add("operations.database-reachable")
def database_reachable(ctx: DoctorContext) -> Outcome:
    try:
        db = ctx.database()
    except Skip as exc:
        if ctx.database_url.startswith("sqlite"):
            raise
        return failed(str(exc))
    return passed(f"{db.dialect} answers")


@checks.add("operations.migrations")
def migrations(ctx: DoctorContext) -> Outcome:
    db = ctx.database()
    problems = migrate.check(db)
    current = migrate.current_revision(db)
    if problems:
        return failed(f"at {current or 'no revision'}: {'; '.join(problems)}")
    return passed(f"at {current}, in step with the code")


@checks.add("operations.redis")
def redis_reachable(ctx: DoctorContext) -> Outcome:
    url = ctx.settings.redis_url
    if not url:
        return skipped("REDIS_URL unset")
    try:
        target = redis_target(url)
    except ConfigError as exc:
        return failed("; ".join(exc.problems))
    client = target.client()
    try:
        client.ping()
    except redis.RedisError as exc:
        return failed(f"no answer from {target.describe()}: {exc}")
    finally:
        redis_client.close(client)
    return passed(f"PING answered by {target.describe()}")


@checks.add("operations.backups")
def backups(ctx: DoctorContext) -> Outcome:
    directory = ctx.backups
    if directory is None:
        return warned(
            "no backup directory named, so the age of the newest backup is unknown",
            "set GARRISON_BACKUP_DIR (or pass --backup-dir) to where `garrison backup create` "
            "writes, and schedule it at least daily",
        )
    if not directory.is_dir():
        return failed(f"backup directory {directory} does not exist (or is not a directory)")
    newest = newest_backup(directory)
    if newest is None:
        return failed(f"no Garrison backup in {directory}")
    name, made = newest
    days = (ctx.clock() - made) / DAY
    s = ctx.settings
    finding = f"newest backup {name} in {directory} is {_age(days)} old"
    if days >= s.backup_fail_days:
        return failed(f"{finding} (fails after {s.backup_fail_days:g} days)")
    if days >= s.backup_warn_days:
        return warned(f"{finding} (warns after {s.backup_warn_days:g} days)")
    return passed(finding)


def newest_backup(directory: Path) -> tuple[str, float] | None:
    """The newest Garrison backup file directly in ``directory``: its name and when it was made
    (the header's ``created_at``, else the file's modification time). Other files, and hidden
    ones (a backup being written is ``.NAME.PID.tmp``), do not count."""
    found: tuple[str, float] | None = None
    for path in directory.iterdir():
        if path.name.startswith(".") or not path.is_file():
            continue
        try:
            with path.open("rb") as src:
                header = plain_header(src)
            made = header.get("created_at")
            when = float(made) if isinstance(made, int | float) else path.stat().st_mtime
        except (OSError, BackupError):
            continue
        if found is None or when > found[1]:
            found = (path.name, when)
    return found


def _age(days: float) -> str:
    if days < 0:
        return "0 hours"  # made "in the future": the clocks disagree
    if days < 2:
        return f"{days * 24:.0f} hours"
    return f"{days:.1f} days"


@checks.add("operations.metrics-setting")
def metrics_setting(ctx: DoctorContext) -> Outcome:
    if ctx.settings.metrics_public:
        return warned("GARRISON_METRICS_PUBLIC is on: only the network keeps /metrics private")
    return passed("admin JWT required for /metrics")


# -- live ---------------------------------------------------------------------------------------
@checks.add("operations.healthz")
def healthz(ctx: DoctorContext) -> Outcome:
    return judge_healthz(probe.get(ctx, "/healthz"))


def judge_healthz(response: httpx.Response) -> Outcome:
    body = probe.json_body(response)
    if response.status_code == 200 and body == {"status": "ok"}:
        return passed('200 {"status":"ok"}')
    return failed(f"{probe.status_line(response)} with {response.text[:120]!r}")


@checks.add("operations.readyz")
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


@checks.add("operations.metrics-protected")
def metrics_protected(ctx: DoctorContext) -> Outcome:
    return judge_protected(probe.get(ctx, "/metrics"))
