"""OIDC login end to end: ``garrison serve`` on PostgreSQL and Redis, the test provider on another
port, a client following every redirect by hand (A11, A9, A13). Also: the first-admin decision is
race-safe on both databases (A11)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
import sqlalchemy as sa

from garrison.app import Services
from garrison.identity.provisioning import Provisioner
from garrison.storage.schema import users as users_table
from tests.oidc_provider import CLIENT_ID, CLIENT_SECRET, TestProvider
from tests.support import (
    LiveServer,
    base_env,
    create_pg_database,
    drop_pg_database,
    free_port,
    redis_client,
    redis_prefix,
)
from tests.unit.identity.browser import BINDING, CSRF, SESSION, set_cookies


@pytest.fixture
def pg_url() -> Iterator[str]:
    url = create_pg_database()
    yield url
    drop_pg_database(url)


def _cookie(jar: dict[str, str]) -> dict[str, str]:
    return {"cookie": "; ".join(f"{k}={v}" for k, v in jar.items())}


@pytest.mark.req("A11", "A9", "A13")
def test_oidc_login_on_a_live_server_with_postgres_and_redis(tmp_path: Path, pg_url: str) -> None:
    store = redis_client()
    prefix = redis_prefix()
    port = free_port()
    with TestProvider() as provider:
        config = tmp_path / "garrison.toml"
        config.write_text(
            f"""
[oidc.test]
issuer = "{provider.url}"
client_id = "{CLIENT_ID}"
client_secret_env = "GARRISON_TEST_OIDC_SECRET"
redirect_uri = "http://127.0.0.1:{port}/auth/oidc/test/callback"
post_login_url = "/app"
"""
        )
        env = base_env(
            tmp_path / "data",
            DATABASE_URL=pg_url,
            REDIS_URL="redis://127.0.0.1:6379/0",
            GARRISON_REDIS_PREFIX=prefix,
            GARRISON_CONFIG=str(config),
            GARRISON_TEST_OIDC_SECRET=CLIENT_SECRET,
            GARRISON_ISSUER=f"http://127.0.0.1:{port}",
        )
        with LiveServer(env, port=port) as server, httpx.Client(timeout=10) as http:
            start = http.get(f"{server.url}/auth/oidc/test/login")
            assert start.status_code == 302, start.text
            binding = set_cookies(start)[BINDING].value
            states = list(store.scan_iter(f"{prefix}:oidc:state:*"))
            assert len(states) == 1  # kept server-side, in Redis, shared by every replica
            assert store.ttl(states[0]) <= 600
            approved = http.get(start.headers["location"])
            assert approved.status_code == 302
            callback = approved.headers["location"]
            assert callback.startswith(f"{server.url}/auth/oidc/test/callback?")
            done = http.get(callback, headers=_cookie({BINDING: binding}))
            assert done.status_code == 303, done.text
            assert done.headers["location"] == "/app"
            assert list(store.scan_iter(f"{prefix}:oidc:state:*")) == []  # spent
            jar = {name: c.value for name, c in set_cookies(done).items() if c.value}
            me = http.get(f"{server.url}/auth/me", headers=_cookie(jar))
            assert me.status_code == 200, me.text
            assert me.json()["roles"] == ["admin", "user"]
            replay = http.get(callback, headers=_cookie({BINDING: binding}))
            assert replay.status_code == 401
            logout = http.post(
                f"{server.url}/auth/logout",
                headers={**_cookie(jar), "X-CSRF-Token": jar[CSRF], "Origin": server.url},
            )
            assert logout.status_code == 204
            assert (
                http.get(
                    f"{server.url}/auth/me", headers=_cookie({SESSION: jar[SESSION]})
                ).status_code
                == 401
            )
            path = urlsplit(callback).path
            assert path == "/auth/oidc/test/callback"
    store.close()


@pytest.mark.req("A11")
def test_first_admin_is_race_safe(backend_services: Services) -> None:
    """Eight first logins at once, on SQLite and on PostgreSQL: exactly one becomes admin (several
    rounds, each on an empty users table, to give a race every chance to show)."""
    provisioner = Provisioner(backend_services.db, backend_services.users)
    for round_no in range(ROUNDS):
        with backend_services.db.begin() as conn:
            conn.execute(sa.delete(users_table))
        errors = _first_logins_at_once(provisioner, round_no, THREADS)
        assert errors == []
        found = backend_services.users.list(None, all_tenants=True)
        assert len(found) == THREADS
        assert sum("admin" in u.roles for u in found) == 1, f"round {round_no}"


ROUNDS, THREADS = 5, 8


def _first_logins_at_once(provisioner: Provisioner, round_no: int, n: int) -> list[BaseException]:
    barrier = threading.Barrier(n)
    errors: list[BaseException] = []

    def first_login(i: int) -> None:
        try:
            barrier.wait(timeout=10)
            provisioner.ensure(
                "test", f"r{round_no}-{i}", email=None, roles=("user",), bootstrap_admin=True
            )
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=first_login, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return errors
