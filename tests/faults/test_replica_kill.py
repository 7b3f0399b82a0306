"""One of two replicas behind nginx killed with SIGKILL under load (L1).

What the deployment promises (docs/operations.md): with both replicas in one nginx upstream and
``proxy_next_upstream``, clients keep being served by the other replica (a client whose request
was in flight on the killed one retries once, as HTTP clients behind a load balancer do); every
audit record acknowledged before the kill is in the database, and the chain verifies.
"""

from __future__ import annotations

import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.faults.conftest import MakeEnv
from tests.faults.support import (
    Call,
    Load,
    audit_verify,
    bearer,
    get,
    kill_group,
    login_call,
    report,
    seed_users,
)
from tests.faults.support import login as login_token
from tests.integration.edge_support import Child, render, require
from tests.support import LiveServer, create_pg_database, drop_pg_database, free_port

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

TEMPLATE = Path(__file__).with_name("nginx-two-replicas.conf.template")
RETRYABLE = (0, 502, 503, 504)


@pytest.fixture
def database() -> Iterator[str]:
    url = create_pg_database("garrison_fault")
    yield url
    drop_pg_database(url)


def nginx_in_front(a: LiveServer, b: LiveServer) -> Child:
    binary = require("nginx")
    port = free_port()
    prefix = Path(tempfile.mkdtemp(prefix="garrison-fault-nginx-"))
    prefix.chmod(0o755)  # run as root, nginx's workers are ``nobody``
    (prefix / "tmp").mkdir()
    conf = render(
        TEMPLATE,
        prefix / "nginx.conf",
        LISTEN=f"127.0.0.1:{port}",
        REPLICA_A=f"127.0.0.1:{a.port}",
        REPLICA_B=f"127.0.0.1:{b.port}",
    )
    cmd = [binary, "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log")]
    return Child(cmd, port, prefix / "out.log", prefix, cleanup=True)


@pytest.mark.req("L1")
def test_sigkill_one_replica_behind_nginx(
    request: pytest.FixtureRequest, make_env: MakeEnv, database: str
) -> None:
    env = make_env(database, GARRISON_TRUSTED_PROXIES="127.0.0.1/32")
    seed_users(env, ("sam", ["support"]), ("tom", ["support"]))
    a, b = LiveServer(env).start(), LiveServer(env).start()
    retried = 0
    lock = threading.Lock()
    try:
        with nginx_in_front(a, b) as edge:
            token = login_token(edge.url, "sam")

            def with_retry(send: Call) -> Call:
                def call(c: httpx.Client, rid: str) -> httpx.Response:
                    nonlocal retried
                    try:
                        response = send(c, rid)
                        if response.status_code not in RETRYABLE:
                            return response
                    except httpx.HTTPError:
                        pass
                    with lock:
                        retried += 1
                    return send(c, rid)

                return call

            calls = {
                "login-sam": with_retry(login_call(edge.url, "sam")),
                "login-tom": with_retry(login_call(edge.url, "tom")),
                "me": with_retry(get(f"{edge.url}/auth/me", bearer(token))),
            }
            with Load(calls, limit=40, pause=0.01) as load:
                time.sleep(2.0)
                killed = time.monotonic()
                kill_group(a.proc)
                time.sleep(3.0)
            samples = load.of()

        failed = [s for s in samples if s.status != 200]
        assert not failed, f"{len(failed)} requests failed after one retry: {failed[:5]}"
        before = [s for s in samples if s.at < killed]
        after = [s for s in samples if s.at >= killed]
        assert after, "no request was served after the kill"
        acknowledged = {
            s.request_id for s in samples if s.client.startswith("login") and s.status == 200
        }
        acknowledged_before = {s.request_id for s in before if s.client.startswith("login")}
        with psycopg.connect(database) as conn:
            rows = conn.execute(
                "SELECT request_id FROM audit_log WHERE action = 'auth.login' AND outcome = 'success'"
            ).fetchall()
        written = {r[0] for r in rows}
        lost = acknowledged - written
        assert not lost, f"{len(lost)} acknowledged audit records lost: {sorted(lost)[:5]}"
        verified = audit_verify(env)
        assert verified.returncode == 0, verified.stdout + verified.stderr
        report(
            request,
            "replica SIGKILL behind nginx",
            requests=len(samples),
            served_after_kill=len(after),
            client_retries=retried,
            failed_after_retry=len(failed),
            acknowledged_logins_before_kill=len(acknowledged_before),
            acknowledged_logins=len(acknowledged),
            audit_records_lost=len(lost),
            audit_verify="ok",
        )
    finally:
        a.stop()
        b.stop()
