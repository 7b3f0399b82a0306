"""REDIS_URL names one server or a Sentinel set (E3, C2): read in one place, refused by name."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis
import redis.sentinel

from garrison.config import load_settings
from garrison.config.checks import production_problems
from garrison.errors import ConfigError
from garrison.storage import redis_client
from garrison.storage.redis_client import redis_target
from tests.support import base_env, run_cli


@pytest.mark.req("E3")
def test_a_plain_url_is_one_server() -> None:
    target = redis_target("redis://:pw@10.0.0.5:6380/3")
    assert not target.is_sentinel
    assert target.db == 3
    assert target.describe() == "10.0.0.5:6380/3"  # no password in what is shown
    client = target.client()
    try:
        kwargs = client.connection_pool.connection_kwargs
        assert (kwargs["host"], kwargs["port"], kwargs["db"]) == ("10.0.0.5", 6380, 3)
        assert kwargs["password"] == "pw"
        assert kwargs["socket_timeout"] == 2.0
    finally:
        redis_client.close(client)


@pytest.mark.req("E3")
def test_a_sentinel_url_names_the_members_the_service_and_the_db() -> None:
    url = (
        "redis+sentinel://app:s%40cret@10.0.0.1:26379,sentinel-b,[fd00::3]:26380/mymaster/2"
        "?sentinel_password=sp"
    )
    target = redis_target(url)
    assert target.is_sentinel
    assert target.sentinels == (("10.0.0.1", 26379), ("sentinel-b", 26379), ("fd00::3", 26380))
    assert (target.service, target.db) == ("mymaster", 2)
    assert (target.username, target.password) == ("app", "s@cret")
    assert target.sentinel_password == "sp"
    assert "cret" not in target.describe()
    assert "sp" not in target.describe().split("via")[1]
    client = target.client()
    try:
        pool = client.connection_pool
        assert isinstance(pool, redis.sentinel.SentinelConnectionPool)
        assert pool.service_name == "mymaster"
        assert pool.connection_kwargs["db"] == 2
        assert pool.connection_kwargs["password"] == "s@cret"
        manager = pool.sentinel_manager
        assert len(manager.sentinels) == 3
        first = manager.sentinels[0].connection_pool.connection_kwargs
        assert first["password"] == "sp"  # the Sentinels' password, not the data nodes'
        assert first["socket_timeout"] == 2.0
    finally:
        redis_client.close(client)


@pytest.mark.req("E3")
def test_a_password_alone_is_the_data_nodes_password() -> None:
    target = redis_target("redis+sentinel://secret@h1/mymaster")
    assert (target.username, target.password, target.db) == (None, "secret", 0)
    assert redis_target("rediss+sentinel://h1:1,h2:2/svc").tls


@pytest.mark.req("E3", "C2")
@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("redis+sentinel://h1:26379,h2:26379", "names its service"),
        ("redis+sentinel://h1:26379/mymaster/zero", "'zero' is not a whole number"),
        ("redis+sentinel://h1:26379/a/0/extra", "/SERVICE or /SERVICE/DB"),
        ("redis+sentinel://h1:99999/mymaster", "not a port number"),
        ("redis+sentinel://h1:26379,,h2/mymaster", "empty Sentinel host"),
        ("redis+sentinel://fd00::1:26379/mymaster", "in brackets"),
        ("redis+sentinel://h1/mymaster?socket_timeout=1", "unknown option(s) socket_timeout"),
        ("sentinel://h1:26379/mymaster", "schemes"),
        ("localhost:6379", "schemes"),
        ("redis://h:port/0", "Port could not be cast"),
        ("redis://h:6379/cache", "'cache' is not a whole number"),
        ("redis://h:6379/0?bogus=1", "bogus"),
    ],
)
def test_an_unusable_url_is_refused_by_name(url: str, says: str) -> None:
    with pytest.raises(ConfigError) as caught:
        redis_target(url)
    (problem,) = caught.value.problems
    assert problem.startswith("REDIS_URL: ")
    assert says in problem


@pytest.mark.req("C2")
def test_credentials_never_appear_in_the_refusal() -> None:
    with pytest.raises(ConfigError) as caught:
        redis_target("redis+sentinel://user:hunter2@h1:26379")
    assert "hunter2" not in caught.value.problems[0]
    assert "***@h1:26379" in caught.value.problems[0]


@pytest.mark.req("C2")
def test_production_checks_name_a_bad_redis_url() -> None:
    settings = load_settings({"REDIS_URL": "redis+sentinel://h1:26379"})
    found = [p for p in production_problems(settings) if p.startswith("REDIS_URL")]
    assert found
    assert "names its service" in found[0]
    good = load_settings({"REDIS_URL": "redis+sentinel://h1:26379,h2:26379,h3:26379/mymaster/0"})
    assert not [p for p in production_problems(good) if p.startswith("REDIS_URL")]


@pytest.mark.req("C2")
def test_the_cli_refuses_a_bad_redis_url_without_a_traceback(tmp_path: Path) -> None:
    env = base_env(tmp_path, REDIS_URL="redis+sentinel://[fd00::1]:26379/mymaster/x")
    done = run_cli("users", "list", env=env)
    assert done.returncode != 0
    assert "REDIS_URL: the database number 'x' is not a whole number" in done.stderr
    assert "[fd00::1]:26379" in done.stderr  # brackets printed as text, not read as markup
    assert "Traceback" not in done.stderr
