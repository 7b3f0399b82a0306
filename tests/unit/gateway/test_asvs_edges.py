"""Small ASVS 5.0 checks of the HTTP edge and the log format: TRACE is refused everywhere
(13.4.4), token answers are never cached (14.3.2), log times are UTC with an explicit offset
(16.2.2). (E7, A5, A9, L9)"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import datetime

import pytest
from starlette.testclient import TestClient

from garrison.identity.users import User
from garrison.observability.logging import JsonFormatter
from tests.conftest import PASSWORD, login


@pytest.mark.req("E7")
@pytest.mark.asvs("13.4.4")
@pytest.mark.parametrize(
    "path", ["/auth/login", "/healthz", "/verify", "/.well-known/jwks.json", "/"]
)
def test_trace_is_refused_with_a_problem(client: TestClient, path: str) -> None:
    response = client.request("TRACE", path, headers={"X-Probe": "reflected?"})
    assert response.status_code in (400, 404, 405)  # /verify: no original request named
    assert response.headers["content-type"] == "application/problem+json"
    assert "reflected?" not in response.text  # nothing of the request is echoed back


@pytest.mark.req("A5", "A9")
@pytest.mark.asvs("14.3.2")
def test_token_answers_are_not_stored_by_browsers_or_proxies(
    client: TestClient, make_user: Callable[..., User]
) -> None:
    make_user("alice")
    answer = client.post("/auth/login", json={"username": "alice", "password": PASSWORD})
    assert answer.status_code == 200
    assert answer.headers["cache-control"] == "no-store"
    refreshed = client.post("/auth/refresh", json={"refresh_token": answer.json()["refresh_token"]})
    assert refreshed.status_code == 200
    assert refreshed.headers["cache-control"] == "no-store"
    cookie = client.post(
        "/auth/login", json={"username": "alice", "password": PASSWORD, "session": "cookie"}
    )
    assert cookie.status_code == 200
    assert cookie.headers["cache-control"] == "no-store"
    assert login(client, "alice")["access_token"]


@pytest.mark.req("L9")
@pytest.mark.asvs("16.2.2")
def test_log_times_are_utc_with_an_explicit_offset() -> None:
    record = logging.LogRecord("garrison.test", logging.INFO, __file__, 1, "hello", None, None)
    line = json.loads(JsonFormatter().format(record))
    when = datetime.fromisoformat(str(line["time"]))
    assert when.utcoffset() is not None
    assert when.utcoffset().total_seconds() == 0  # type: ignore[union-attr]
    assert str(line["time"]).endswith("+00:00")
