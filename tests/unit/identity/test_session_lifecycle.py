"""The session lifecycle over HTTP (A16, A5, A9): idle and absolute lifetimes of refresh families
and cookie sessions on an injected clock, and the user's own session list and its ending."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from garrison.app import Services, build_services
from garrison.errors import ConfigError
from garrison.gateway.asgi import create_app
from tests.conftest import PASSWORD, MakeSettings, bearer, login
from tests.jose import FakeClock
from tests.unit.identity.browser import Browser

IDLE, ABSOLUTE = 1200, 3600


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def svc(make_settings: MakeSettings, clock: FakeClock) -> Iterator[Services]:
    services = build_services(
        make_settings(
            GARRISON_SESSION_IDLE_TTL=str(IDLE), GARRISON_SESSION_ABSOLUTE_TTL=str(ABSOLUTE)
        ),
        clock=clock,
    )
    services.keyring.load()
    services.users.create("alice", PASSWORD)
    services.users.create("bob", PASSWORD)
    yield services
    services.close()


@pytest.fixture
def http(svc: Services) -> Iterator[TestClient]:
    with TestClient(create_app(svc), base_url="http://127.0.0.1") as client:
        yield client


def _refresh(http: TestClient, token: str) -> Any:
    return http.post("/auth/refresh", json={"refresh_token": token})


def _sessions(http: TestClient, token: str) -> list[dict[str, Any]]:
    answer = http.get("/auth/sessions", headers=bearer(token))
    assert answer.status_code == 200, answer.text
    found: list[dict[str, Any]] = answer.json()["sessions"]
    return found


# -- lifetimes ---------------------------------------------------------------------------------


@pytest.mark.req("A16", "A5")
@pytest.mark.asvs("V7.3.1")
def test_a_session_idle_too_long_cannot_be_refreshed(http: TestClient, clock: FakeClock) -> None:
    pair = login(http, "alice")
    # used within the idle timeout, it lives past it: idleness counts from the last use
    for _ in range(2):
        clock.advance(IDLE - 60)
        answer = _refresh(http, pair["refresh_token"])
        assert answer.status_code == 200, answer.text
        pair = answer.json()
    clock.advance(IDLE + 1)
    idle = _refresh(http, pair["refresh_token"])
    assert idle.status_code == 401
    assert idle.json()["detail"] == "session idle too long"
    assert _refresh(http, pair["refresh_token"]).status_code == 401  # and stays refused


@pytest.mark.req("A16", "A5", "A4")
@pytest.mark.asvs("V7.3.2", "V7.4.1")
def test_a_session_ends_at_its_absolute_lifetime_however_busy(
    http: TestClient, clock: FakeClock
) -> None:
    pair = login(http, "alice")
    started = clock()
    while clock() + 600 < started + ABSOLUTE:
        clock.advance(600)
        answer = _refresh(http, pair["refresh_token"])
        assert answer.status_code == 200, answer.text
        pair = answer.json()
    access = bearer(pair["access_token"])
    assert http.get("/auth/me", headers=access).status_code == 200
    clock.advance(started + ABSOLUTE - clock() + 1)  # its last access token has not expired yet
    refused = _refresh(http, pair["refresh_token"])
    assert refused.status_code == 401
    assert refused.json()["detail"] == "session reached its absolute lifetime"
    assert http.get("/auth/me", headers=access).status_code == 401  # the session is over


@pytest.mark.req("A16", "A9")
@pytest.mark.asvs("V7.3.1")
def test_a_cookie_session_idle_too_long_ends(http: TestClient, clock: FakeClock) -> None:
    browser = Browser(http)
    body = {"username": "alice", "password": PASSWORD, "session": "cookie"}
    assert browser.request("POST", "/auth/login", json=body).status_code == 200
    clock.advance(IDLE - 60)
    renewed = browser.request("POST", "/auth/refresh", headers=browser.csrf_headers())
    assert renewed.status_code == 200, renewed.text
    clock.advance(IDLE + 1)
    expired = browser.request("POST", "/auth/refresh", headers=browser.csrf_headers())
    assert expired.status_code == 401


@pytest.mark.req("A16")
@pytest.mark.asvs("V7.1.1")
def test_the_absolute_lifetime_cannot_be_shorter_than_the_idle_timeout(
    make_settings: MakeSettings,
) -> None:
    with pytest.raises(ConfigError) as refused:
        make_settings(GARRISON_SESSION_IDLE_TTL="7200", GARRISON_SESSION_ABSOLUTE_TTL="3600")
    assert "GARRISON_SESSION_ABSOLUTE_TTL" in str(refused.value)
    defaults = make_settings()
    assert (defaults.session_idle_ttl, defaults.session_absolute_ttl) == (1800, 43200)


# -- the user's own sessions -------------------------------------------------------------------


@pytest.mark.req("A16")
@pytest.mark.asvs("V7.5.2")
def test_users_list_their_own_live_sessions(http: TestClient, clock: FakeClock) -> None:
    phone = http.post(
        "/auth/login",
        json={"username": "alice", "password": PASSWORD},
        headers={"User-Agent": "phone/1.0"},
    ).json()
    clock.advance(30)
    laptop = login(http, "alice")
    gone = login(http, "alice")
    http.post("/auth/logout", headers=bearer(gone["access_token"]))
    login(http, "bob")
    clock.advance(30)
    renewed = http.post(
        "/auth/refresh",
        json={"refresh_token": phone["refresh_token"]},
        headers={"User-Agent": "phone/1.0"},
    )
    assert renewed.status_code == 200

    found = _sessions(http, laptop["access_token"])
    assert len(found) == 2  # bob's, and the logged-out one, are not listed
    assert {tuple(sorted(s)) for s in found} == {
        ("amr", "created_at", "current", "id", "ip", "last_used_at", "user_agent")
    }
    first, second = found  # most recently used first
    assert first["user_agent"] == "phone/1.0"
    assert not first["current"]
    assert first["last_used_at"] == clock()
    assert first["created_at"] == clock() - 60
    assert second["current"]
    assert second["ip"] == "testclient"
    assert first["amr"] == second["amr"] == ["pwd"]
    assert http.get("/auth/sessions").status_code == 401


@pytest.mark.req("A16", "A4")
@pytest.mark.asvs("V7.5.2", "V7.4.1")
def test_a_user_ends_another_of_their_own_sessions(http: TestClient) -> None:
    here, there = login(http, "alice"), login(http, "alice")
    [other] = [s for s in _sessions(http, here["access_token"]) if not s["current"]]
    ended = http.delete(f"/auth/sessions/{other['id']}", headers=bearer(here["access_token"]))
    assert ended.status_code == 204
    assert http.get("/auth/me", headers=bearer(there["access_token"])).status_code == 401
    assert _refresh(http, there["refresh_token"]).status_code == 401
    assert http.get("/auth/me", headers=bearer(here["access_token"])).status_code == 200
    assert [s["current"] for s in _sessions(http, here["access_token"])] == [True]
    again = http.delete(f"/auth/sessions/{other['id']}", headers=bearer(here["access_token"]))
    assert again.status_code == 404


@pytest.mark.req("A16", "Z3")
@pytest.mark.asvs("V7.5.2", "V8.2.2")
def test_another_users_session_id_is_not_found_and_left_alone(http: TestClient) -> None:
    alice, bob = login(http, "alice"), login(http, "bob")
    [bobs] = _sessions(http, bob["access_token"])
    probe = http.delete(f"/auth/sessions/{bobs['id']}", headers=bearer(alice["access_token"]))
    unknown = http.delete(
        "/auth/sessions/00000000-0000-0000-0000-000000000000",
        headers=bearer(alice["access_token"]),
    )
    assert probe.status_code == unknown.status_code == 404
    assert probe.json() == unknown.json()  # nothing tells an existing id from a made-up one
    assert http.get("/auth/me", headers=bearer(bob["access_token"])).status_code == 200
    assert _refresh(http, bob["refresh_token"]).status_code == 200
