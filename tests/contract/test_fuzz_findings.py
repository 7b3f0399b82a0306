"""Defects found while fuzzing the OpenAPI description (U2, E7), each on SQLite and PostgreSQL:
input the server took for a 500 or for a meaningless success is refused with 422 and a reason."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from garrison.app import Services
from garrison.gateway.asgi import create_app
from tests.conftest import PASSWORD, bearer, login


@pytest.fixture
def http(backend_services: Services) -> Iterator[tuple[TestClient, dict[str, str]]]:
    backend_services.users.create("root", PASSWORD, roles=("admin",))
    app = create_app(backend_services)
    with TestClient(app, base_url="http://127.0.0.1", raise_server_exceptions=False) as client:
        yield client, bearer(login(client, "root")["access_token"])


@pytest.mark.req("E7", "U2")
@pytest.mark.parametrize("name", ["a\x00b", "line\nbreak", "\x1b[31mred", "\u202egpj.exe"])
def test_an_api_key_name_with_control_characters_is_refused_not_a_500(
    http: tuple[TestClient, dict[str, str]], name: str
) -> None:
    """PostgreSQL refuses NUL in text: ``{"name": "\\u0000"}`` was an unhandled DataError (500)."""
    client, admin = http
    body = {"user": "root", "scopes": ["ticket.read"], "name": name}
    response = client.post("/admin/api-keys", json=body, headers=admin)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert "name" in response.json()["detail"]
    ok = client.post("/admin/api-keys", json={**body, "name": "ci deploy key"}, headers=admin)
    assert ok.status_code == 201, ok.text
    assert ok.json()["name"] == "ci deploy key"


@pytest.mark.req("E7", "U2")
@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "-inf", "1e400", "-1e999"])
@pytest.mark.parametrize("param", ["since", "until"])
def test_an_audit_time_that_is_not_a_number_is_refused(
    http: tuple[TestClient, dict[str, str]], param: str, value: str
) -> None:
    """``?since=nan`` (or ``inf``, ``1e400``) was taken as a time: every comparison with NaN is
    false, so the filter silently matched nothing, or everything, instead of saying why."""
    client, admin = http
    response = client.get("/admin/audit", params={param: value}, headers=admin)
    assert response.status_code == 422, response.text
    assert response.json()["reasons"] == [f"{param}: use 24h, 7d, 2026-01-31T12:00:00Z or UNIX s"]
    assert (
        client.get("/admin/audit", params={param: "1700000000"}, headers=admin).status_code == 200
    )
