"""`garrison doctor` as an operator runs it (O4): exit 1 on any FAIL, 0 when clean, 2 on usage
errors; `--json` parses; never a stack trace.

The clean run is a production deployment end to end: secrets from `garrison secrets generate`,
PostgreSQL through the least-privilege app_rw role with ``sslmode=require``, and `garrison serve`
probed with ``--url``. The local test PostgreSQL has no TLS, so DATABASE_URL reaches it through its
Unix socket, where libpq does not use TLS and ``sslmode=require`` is accepted; the configured string
is still what the configuration check judges.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.support import LiveServer, base_env, run_cli, unavailable
from tests.unit.doctor.conftest import RoleDatabase, role_database

__all__ = ["role_database"]  # the fixture, shared with the unit suite

SOCKET_DIR = os.environ.get("GARRISON_TEST_PG_SOCKET_DIR", "/var/run/postgresql")


def doctor_json(env: dict[str, str], *args: str) -> tuple[int, dict[str, object]]:
    done = run_cli("doctor", "--json", *args, env=env, timeout=90)
    assert "Traceback" not in done.stderr, done.stderr
    return done.returncode, json.loads(done.stdout)


def statuses(report: dict[str, object]) -> dict[str, str]:
    checks = report["checks"]
    assert isinstance(checks, list)
    return {c["id"]: c["status"] for c in checks}


@pytest.mark.req("O4", "C2", "C3")
def test_development_defaults_exit_1_with_a_parsable_report(tmp_path: Path) -> None:
    code, report = doctor_json(base_env(tmp_path / "data"))
    assert code == 1
    assert report["ok"] is False
    found = statuses(report)
    for failing in ("operations.production-mode", "identity.secrets", "operations.database-url"):
        assert found[failing] == "fail"
    assert not (tmp_path / "data" / "garrison.db").exists()  # the doctor only looks


@pytest.mark.req("O4")
def test_human_report_groups_by_area_with_fixes(tmp_path: Path) -> None:
    done = run_cli("doctor", env=base_env(tmp_path / "data"), timeout=90)
    assert done.returncode == 1
    text = done.stdout
    areas = ["identity", "tokens", "tenancy", "edge", "audit", "operations"]
    positions = [text.index(f"\n{a}\n") if i else text.index(f"{a}\n") for i, a in enumerate(areas)]
    assert positions == sorted(positions)
    assert re.search(r"^FAIL\s+local\s+operations\.production-mode\s", text, re.M)
    assert re.search(r"^PASS\s+local\s+tokens\.access-ttl\s", text, re.M)
    assert "fix: set GARRISON_ENV=production" in " ".join(text.split())
    assert "fail" in text.splitlines()[-1]


@pytest.mark.req("O4")
@pytest.mark.parametrize(
    "args",
    [
        ("--url", "ftp://example.com"),
        ("--url", "http://"),
        ("--url", "http://h/?q=1"),
        ("--bogus",),
    ],
)
def test_usage_errors_exit_2(tmp_path: Path, args: tuple[str, ...]) -> None:
    done = run_cli("doctor", *args, env=base_env(tmp_path / "data"), timeout=60)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr


def _socket_url(url: str, role: str) -> str:
    if not Path(SOCKET_DIR).is_dir():
        unavailable("PostgreSQL Unix socket", SOCKET_DIR)
    database = urlsplit(url).path.lstrip("/")
    return f"postgresql://{role}@/{database}?host={SOCKET_DIR}&sslmode=require"


@pytest.mark.req("O4", "C2", "C3", "C4", "T4", "L8", "A3", "E1")
def test_a_production_deployment_exits_0(tmp_path: Path, role_database: RoleDatabase) -> None:
    generated = run_cli("secrets", "generate", "--json", env=base_env(tmp_path), timeout=60)
    assert generated.returncode == 0, generated.stderr
    env = base_env(
        tmp_path / "data",
        GARRISON_ENV="production",
        DATABASE_URL=_socket_url(role_database.admin_url, role_database.names.app_rw),
        ENABLE_HSTS="true",
        **json.loads(generated.stdout),
    )
    with LiveServer(env) as server:
        code, report = doctor_json(env, "--url", server.url)
    failing = {i: s for i, s in statuses(report).items() if s == "fail"}
    assert (code, failing) == (0, {}), report
    found = statuses(report)
    for clean in ("operations.database-url", "tenancy.runtime-role", "tokens.alg-none"):
        assert found[clean] == "pass"
