"""Two `garrison serve` replicas on one PostgreSQL and one Redis: disabling a user or revoking its
sessions takes effect on every replica within one second (A4, A12)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import PASSWORD
from tests.support import (
    LiveServer,
    base_env,
    create_pg_database,
    drop_pg_database,
    redis_client,
    redis_prefix,
    run_cli,
)

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis]


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[dict[str, str], list[LiveServer]]]:
    redis_client()
    url = create_pg_database()
    env = base_env(
        tmp_path / "data",
        DATABASE_URL=url,
        REDIS_URL="redis://127.0.0.1:6379/0",
        GARRISON_REDIS_PREFIX=redis_prefix(),
        GARRISON_USER_CACHE_TTL="300",  # only pub/sub can make the replicas notice in time
        GARRISON_ISSUER="http://garrison.test",  # replicas share one public address and issuer
    )
    for name, roles in (("alice", ["user"]), ("root", ["admin"])):
        args = ["users", "create", "--username", name, "--password-stdin", "--no-password-change"]
        for role in roles:
            args += ["--role", role]
        made = run_cli(*args, env=env, stdin=PASSWORD + "\n")
        assert made.returncode == 0, made.stderr
    servers = [LiveServer(env).start(), LiveServer(env).start()]
    try:
        yield env, servers
    finally:
        for server in servers:
            server.stop()
        drop_pg_database(url)


def _token(server: LiveServer, username: str) -> str:
    response = httpx.post(
        f"{server.url}/auth/login", json={"username": username, "password": PASSWORD}, timeout=10
    )
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


def _me(server: LiveServer, token: str) -> int:
    return httpx.get(
        f"{server.url}/auth/me", headers={"Authorization": f"Bearer {token}"}, timeout=5
    ).status_code


def _seconds_until_refused(servers: list[LiveServer], token: str, limit: float = 5.0) -> float:
    start = time.monotonic()
    pending = set(range(len(servers)))
    while pending and time.monotonic() - start < limit:
        for i in list(pending):
            if _me(servers[i], token) == 401:
                pending.discard(i)
        time.sleep(0.01)
    assert not pending, f"replicas {sorted(pending)} still accept the token after {limit} s"
    return time.monotonic() - start


@pytest.mark.req("A4", "A12")
def test_cli_disable_reaches_every_replica_within_a_second(
    cluster: tuple[dict[str, str], list[LiveServer]],
) -> None:
    env, servers = cluster
    token = _token(servers[0], "alice")
    for _ in range(3):  # warm every cache on both replicas
        assert [_me(s, token) for s in servers] == [200, 200]
    disabled = run_cli("users", "disable", "alice", env=env)
    assert disabled.returncode == 0, disabled.stderr
    assert _seconds_until_refused(servers, token) < 1.0


@pytest.mark.req("A4", "A12")
def test_admin_api_revoke_on_one_replica_reaches_the_other(
    cluster: tuple[dict[str, str], list[LiveServer]],
) -> None:
    _env, servers = cluster
    token = _token(servers[1], "alice")
    admin = _token(servers[0], "root")
    for _ in range(3):
        assert [_me(s, token) for s in servers] == [200, 200]
    me = httpx.get(f"{servers[0].url}/auth/me", headers={"Authorization": f"Bearer {token}"})
    revoked = httpx.post(
        f"{servers[0].url}/admin/users/{me.json()['sub']}/revoke-sessions",
        headers={"Authorization": f"Bearer {admin}"},
        timeout=10,
    )
    assert revoked.status_code == 200, revoked.text
    assert _seconds_until_refused(servers, token) < 1.0


@pytest.mark.req("A12", "A7", "A4")
def test_revoke_sessions_ends_the_users_api_key_on_every_replica(
    cluster: tuple[dict[str, str], list[LiveServer]],
) -> None:
    """``revoke-sessions`` answered "live tokens are dead" while the user's API keys kept working;
    now the key stops within a second on both replicas, whichever one was asked."""
    env, servers = cluster
    made = run_cli("api-keys", "create", "--user", "alice", "--scope", "*", "--json", env=env)
    assert made.returncode == 0, made.stderr
    key = json.loads(made.stdout)["key"]
    for _ in range(3):  # warm every replica's key cache (300 s TTL: only pub/sub can end it)
        assert [_me(s, key) for s in servers] == [200, 200]
    admin = _token(servers[0], "root")
    me = httpx.get(f"{servers[1].url}/auth/me", headers={"Authorization": f"Bearer {key}"})
    revoked = httpx.post(
        f"{servers[0].url}/admin/users/{me.json()['sub']}/revoke-sessions",
        headers={"Authorization": f"Bearer {admin}"},
        timeout=10,
    )
    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["revoked_api_keys"] == 1
    assert _seconds_until_refused(servers, key) < 1.0


@pytest.mark.req("A12", "A7")
def test_cli_enable_after_disable_does_not_revive_the_key(
    cluster: tuple[dict[str, str], list[LiveServer]],
) -> None:
    env, servers = cluster
    made = run_cli("api-keys", "create", "--user", "alice", "--scope", "*", "--json", env=env)
    key = json.loads(made.stdout)["key"]
    assert [_me(s, key) for s in servers] == [200, 200]
    assert run_cli("users", "disable", "alice", env=env).returncode == 0
    assert _seconds_until_refused(servers, key) < 1.0
    assert run_cli("users", "enable", "alice", env=env).returncode == 0
    time.sleep(1.0)
    assert [_me(s, key) for s in servers] == [401, 401]
