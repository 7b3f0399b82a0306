"""API keys expire by default (A7, C5): ``GARRISON_API_KEY_TTL`` (90 days unless set), and every
key's public form carries the date it must be rotated by."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from garrison.app import Services, build_services
from garrison.errors import AuthenticationError, ConfigError
from garrison.gateway.asgi import create_app
from tests.conftest import PASSWORD, MakeSettings, bearer, login
from tests.jose import FakeClock
from tests.support import base_env, run_cli

DAY = 86400


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def _services(make_settings: MakeSettings, clock: FakeClock, **settings: str) -> Services:
    svc = build_services(make_settings(**settings), clock=clock)
    svc.keyring.load()
    return svc


@pytest.fixture
def svc(make_settings: MakeSettings, clock: FakeClock) -> Iterator[Services]:
    services = _services(make_settings, clock)
    yield services
    services.close()


@pytest.mark.req("A7", "C5")
def test_a_key_without_an_expiry_expires_after_90_days(svc: Services, clock: FakeClock) -> None:
    user = svc.users.create("kim", PASSWORD)
    secret, key = svc.api_keys.create(user.id, ("read",), tenant=None)
    assert key.expires_at == pytest.approx(clock() + 90 * DAY)
    public = key.public()
    assert public["rotate_by"] == pytest.approx(clock() + 90 * DAY)
    assert public["expires_at"] == public["rotate_by"]
    assert svc.api_keys.authenticate(secret).id == key.id
    clock.advance(90 * DAY + 1)
    with pytest.raises(AuthenticationError):
        svc.api_keys.authenticate(secret)


@pytest.mark.req("A7", "C5")
def test_the_default_lifetime_is_a_setting(make_settings: MakeSettings, clock: FakeClock) -> None:
    services = _services(make_settings, clock, GARRISON_API_KEY_TTL="30d")
    try:
        assert services.settings.api_key_ttl == 30 * DAY
        user = services.users.create("kim", PASSWORD)
        _, key = services.api_keys.create(user.id, ("read",), tenant=None)
        assert key.expires_at == pytest.approx(clock() + 30 * DAY)
        _, explicit = services.api_keys.create(user.id, ("read",), tenant=None, expires_in=3600)
        assert explicit.expires_at == pytest.approx(clock() + 3600)
        assert explicit.public()["rotate_by"] == pytest.approx(clock() + 3600)
    finally:
        services.close()


@pytest.mark.req("A7")
@pytest.mark.parametrize("value", ["soon", "0d", "-5d", "90 days", "", "90x"])
def test_a_bad_lifetime_is_refused_naming_the_setting(
    make_settings: MakeSettings, value: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        make_settings(GARRISON_API_KEY_TTL=value)
    assert any(p.startswith("GARRISON_API_KEY_TTL") for p in caught.value.problems)


@pytest.mark.req("A7")
def test_a_lifetime_may_be_given_in_seconds(make_settings: MakeSettings) -> None:
    assert make_settings(GARRISON_API_KEY_TTL="86400").api_key_ttl == DAY
    assert make_settings(GARRISON_API_KEY_TTL="12h").api_key_ttl == 12 * 3600
    assert make_settings().api_key_ttl == 90 * DAY


@pytest.mark.req("A7", "C5")
def test_keys_made_over_http_carry_their_rotate_by_date(svc: Services, clock: FakeClock) -> None:
    svc.users.create("root", PASSWORD, roles=("admin",))
    svc.users.create("kim", PASSWORD)
    with TestClient(create_app(svc), base_url="http://127.0.0.1") as client:
        token = login(client, "root")["access_token"]
        made = client.post(
            "/admin/api-keys", json={"user": "kim", "scopes": ["read"]}, headers=bearer(token)
        )
    assert made.status_code == 201, made.text
    body = made.json()
    assert body["rotate_by"] == pytest.approx(clock() + 90 * DAY)
    assert body["expires_at"] == pytest.approx(clock() + 90 * DAY)


@pytest.mark.slow
@pytest.mark.req("A7", "C5")
def test_the_cli_makes_expiring_keys_by_default(tmp_path: Path) -> None:
    env = base_env(tmp_path / "data", GARRISON_API_KEY_TTL="7d")
    made = run_cli(
        "users", "create", "--username", "kim", "--password-stdin", env=env, stdin="x" * 20
    )
    assert made.returncode == 0, made.stderr
    done = run_cli("api-keys", "create", "--user", "kim", "--scope", "read", "--json", env=env)
    assert done.returncode == 0, done.stderr
    key = json.loads(done.stdout)
    assert key["expires_at"] - key["created_at"] == pytest.approx(7 * DAY)
    assert key["rotate_by"] == key["expires_at"]
    listed = run_cli("api-keys", "list", "--user", "kim", "--json", env=env)
    assert json.loads(listed.stdout)[0]["rotate_by"] == key["rotate_by"]
