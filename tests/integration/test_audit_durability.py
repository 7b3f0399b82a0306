"""``kill -9`` under load loses no acknowledged audit record, and the chain still verifies (L1, L7).

A live ``garrison serve`` on PostgreSQL takes failed logins from several clients at once (each one
writes an ``auth.login`` record through the group-commit writer before its 401 is sent). The process
is killed with SIGKILL mid-stream; every login that got an answer must have its record.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from garrison.app import audit_seal
from garrison.audit.checkpoint import stored_public_keys
from garrison.audit.head import AuditSeal
from garrison.audit.verify import verify_chain
from garrison.config import load_settings
from garrison.storage.db import Database
from tests.support import LiveServer, base_env, create_pg_database, drop_pg_database, run_cli

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

CLIENTS = 12
REQUESTS = 240
KILL_AFTER = 120


@pytest.fixture
def pg_url() -> Iterator[str]:
    url = create_pg_database()
    yield url
    drop_pg_database(url)


def _seal(env: dict[str, str]) -> AuditSeal:
    """The servers' audit key and head file: the same data dir."""
    return audit_seal(load_settings(env, check_production=False))


@pytest.mark.req("L1", "L7", "A13")
def test_sigkill_under_load_loses_no_acknowledged_record(tmp_path: Path, pg_url: str) -> None:
    env = base_env(
        tmp_path / "data",
        DATABASE_URL=pg_url,
        GARRISON_LOGIN_MAX_FAILURES="100000",
        GARRISON_LOGIN_MAX_FAILURES_PER_ACCOUNT="100000",
        GARRISON_LOGIN_MAX_FAILURES_PER_IP="100000",
    )
    server = LiveServer(env).start()
    acknowledged: list[str] = []
    lock = threading.Lock()
    killed = threading.Event()

    def attempt(n: int) -> None:
        name = f"ghost-{n:04d}"
        if killed.is_set():
            return
        try:
            response = httpx.post(
                f"{server.url}/auth/login",
                json={"username": name, "password": "not-the-password"},
                timeout=20,
            )
        except httpx.HTTPError:
            return  # never answered: not acknowledged, may or may not be recorded
        assert response.status_code == 401, response.text
        with lock:
            acknowledged.append(name)
            if len(acknowledged) >= KILL_AFTER and not killed.is_set():
                killed.set()
                server.stop(signal.SIGKILL)  # requests are still in flight

    try:
        with ThreadPoolExecutor(CLIENTS) as pool:
            list(pool.map(attempt, range(REQUESTS)))
    finally:
        server.stop(signal.SIGKILL)
    assert killed.is_set(), "the server was never killed under load"

    db = Database(pg_url)
    try:
        with db.engine.connect() as conn:
            recorded = set(
                conn.execute(
                    sa.text("SELECT actor FROM audit_log WHERE action = 'auth.login'")
                ).scalars()
            )
        missing = sorted(set(acknowledged) - recorded)
        assert not missing, f"{len(missing)} acknowledged record(s) lost: {missing[:5]}"
        assert len(acknowledged) >= KILL_AFTER
        report = verify_chain(db, stored_public_keys(db), _seal(env))
        assert report.ok, report
        assert report.checked >= len(acknowledged)
    finally:
        db.dispose()

    started = time.monotonic()
    verified = run_cli("audit", "verify", "--json", env=env)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert time.monotonic() - started < 60


@pytest.mark.req("L1", "L7")
def test_two_replicas_writing_at_once_keep_one_chain(tmp_path: Path, pg_url: str) -> None:
    env = base_env(
        tmp_path / "data",
        DATABASE_URL=pg_url,
        GARRISON_LOGIN_MAX_FAILURES="100000",
        GARRISON_LOGIN_MAX_FAILURES_PER_ACCOUNT="100000",
        GARRISON_LOGIN_MAX_FAILURES_PER_IP="100000",
    )
    replicas = [LiveServer(env).start(), LiveServer(env).start()]
    try:

        def attempt(n: int) -> int:
            server = replicas[n % 2]
            response = httpx.post(
                f"{server.url}/auth/login",
                json={"username": f"r{n % 2}-{n}", "password": "nope-nope"},
                timeout=20,
            )
            return response.status_code

        with ThreadPoolExecutor(CLIENTS) as pool:
            statuses = list(pool.map(attempt, range(120)))
    finally:
        for server in replicas:
            server.stop()
    assert statuses == [401] * 120
    db = Database(pg_url)
    try:
        report = verify_chain(db, stored_public_keys(db), _seal(env))
        with db.engine.connect() as conn:
            actors = conn.execute(
                sa.text("SELECT actor FROM audit_log WHERE action = 'auth.login'")
            ).scalars()
            by_replica = {name.split("-")[0] for name in actors}
    finally:
        db.dispose()
    assert report.ok, report
    assert report.checked == 120
    assert by_replica == {"r0", "r1"}
