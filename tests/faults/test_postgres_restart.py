"""PostgreSQL restarted under load (L1, L8, O3).

What the service promises (docs/operations.md): while the database is away, every request that
needs it is answered 503 with ``Retry-After`` (never 500), ``/readyz`` says 503 and comes back; the
pool (``GARRISON_DB_POOL_SIZE``, ``GARRISON_DB_MAX_OVERFLOW``) recovers on its own within 5 s of the
server accepting connections again; no audit record that was acknowledged (a 200 login) is lost,
and the chain verifies afterwards. The server is stopped in ``immediate`` mode: no shutdown
checkpoint, the restart replays the WAL, as after a crash.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import psycopg
import pytest

from tests.faults.conftest import MakeEnv
from tests.faults.support import (
    Load,
    PrivatePostgres,
    audit_verify,
    bearer,
    get,
    login_call,
    metric,
    private_postgres,
    report,
    seed_users,
)
from tests.faults.support import login as login_token
from tests.support import LiveServer

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

OUTAGE = 2.5
RECOVERY_BOUND = 5.0


@pytest.fixture
def postgres() -> Iterator[PrivatePostgres]:
    with private_postgres() as server:
        yield server


@pytest.mark.req("L1", "L8", "O3")
def test_postgres_restart_mid_load(
    request: pytest.FixtureRequest, make_env: MakeEnv, postgres: PrivatePostgres
) -> None:
    env = make_env(
        postgres.url,
        GARRISON_DB_POOL_SIZE="3",  # fewer connections than clients: the pool is exercised
        GARRISON_DB_MAX_OVERFLOW="1",
        GARRISON_DB_POOL_TIMEOUT="3",
        GARRISON_USER_CACHE_TTL="0.2",  # /auth/me reads the database too
    )
    seed_users(env, ("sam", ["support"]), ("tom", ["support"]))
    server = LiveServer(env).start()
    try:
        token = login_token(server.url, "sam")

        calls = {
            "login-sam": login_call(server.url, "sam"),
            "login-tom": login_call(server.url, "tom"),
            "me": get(f"{server.url}/auth/me", bearer(token)),
            "readyz": get(f"{server.url}/readyz"),
        }
        with Load(calls, limit=40, pause=0.02) as load:
            time.sleep(1.5)
            down = time.monotonic()
            postgres.stop("immediate")
            time.sleep(OUTAGE)
            postgres.start()  # returns once the server accepts connections
            up = time.monotonic()
            time.sleep(RECOVERY_BOUND + 1.0)
        samples = load.of()

        bad = [s for s in samples if s.status not in (200, 503)]
        assert not bad, f"unexpected answers (500s, refusals, no answer): {bad[:5]}"
        no_retry = [s for s in samples if s.status == 503 and not (s.retry_after or "").isdigit()]
        assert not no_retry, f"503 without Retry-After: {no_retry[:3]}"
        during = [s for s in samples if down + 0.5 <= s.at <= up - 0.5]
        for client in ("login-sam", "login-tom", "readyz"):
            statuses = {s.status for s in during if s.client == client}
            assert statuses == {503}, f"{client} while the database was away: {statuses}"
        recovery = {}
        for client in ("login-sam", "login-tom", "me", "readyz"):
            back = load.first_ok_streak(client, up)
            assert back is not None, f"{client} never recovered"
            recovery[client] = round(max(0.0, back - up), 3)
        assert max(recovery.values()) <= RECOVERY_BOUND, recovery
        tail = [s.status for s in load.of(since=up + RECOVERY_BOUND)]
        assert set(tail) == {200}, "every client is served once the pool has recovered"

        # every acknowledged login has its audit record; the chain verifies
        acknowledged = {
            s.request_id for s in samples if s.client.startswith("login") and s.status == 200
        }
        with psycopg.connect(postgres.url) as conn:
            rows = conn.execute(
                "SELECT request_id FROM audit_log WHERE action = 'auth.login' AND outcome = 'success'"
            ).fetchall()
        lost = acknowledged - {r[0] for r in rows}
        assert not lost, f"{len(lost)} acknowledged audit records lost: {sorted(lost)[:5]}"
        verified = audit_verify(env)
        assert verified.returncode == 0, verified.stdout + verified.stderr
        unavailable = metric(httpx.get(f"{server.url}/metrics").text, "garrison_unavailable_total")
        assert unavailable > 0
        report(
            request,
            "postgres restart",
            requests=len(samples),
            refused_503=sum(s.status == 503 for s in samples),
            http_500=sum(s.status >= 500 and s.status != 503 for s in samples),
            recovery_s=recovery,
            acknowledged_logins=len(acknowledged),
            audit_records_lost=len(lost),
            audit_verify="ok",
            unavailable_counted=unavailable,
        )
    finally:
        server.stop()
