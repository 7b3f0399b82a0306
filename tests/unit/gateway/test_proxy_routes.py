"""Proxied routes that share a prefix (E8, Z2): one matcher decides the action and the upstream.

Two ``[[routes]]`` with prefix ``/api/x``, GET to upstream A and POST to upstream B: the proxy
picked the first route for the prefix whatever the method (a POST answered 400 "not routed"),
while the registry matched by method, so the action decided and the upstream served could belong
to different routes. The proxy now forwards to the route of the registry's match; two routes that
would both match one request are refused at start, naming both.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from garrison.app import build_services, policy_config
from garrison.config.settings import RouteDef
from garrison.errors import ConfigError
from garrison.gateway.asgi import create_app
from garrison.policy.registry import registry_for
from tests.conftest import PASSWORD, MakeSettings, bearer, login
from tests.integration.edge_support import Upstream, recording_upstream


@pytest.fixture
def two_upstreams() -> Iterator[tuple[Upstream, Upstream]]:
    with recording_upstream() as a, recording_upstream() as b:
        yield a, b


def _routes(a: str, b: str) -> tuple[RouteDef, ...]:
    return (
        RouteDef(prefix="/api/x", methods=("GET",), action="ticket.read", upstream=a),
        RouteDef(prefix="/api/x", methods=("POST",), action="ticket.comment", upstream=b),
    )


@pytest.mark.req("E8", "Z2")
def test_same_prefix_routes_split_by_method_reach_their_own_upstream(
    make_settings: MakeSettings, two_upstreams: tuple[Upstream, Upstream]
) -> None:
    a, b = two_upstreams
    svc = build_services(make_settings(routes=_routes(a.url, b.url)))
    svc.users.create("sam", PASSWORD, roles=("support",))
    svc.users.create("uma", PASSWORD, roles=("user",))
    with TestClient(create_app(svc), base_url="http://127.0.0.1") as client:
        sam = bearer(login(client, "sam")["access_token"])
        uma = bearer(login(client, "uma")["access_token"])
        got = client.get("/api/x/1", headers=sam)
        posted = client.post("/api/x/1", headers=sam, json={"c": 1})
        # uma may read (ticket.read) but not comment: POST is decided as ticket.comment
        refused = client.post("/api/x/1", headers=uma, json={"c": 1})
    svc.close()
    assert got.status_code == 200, got.text
    assert posted.status_code == 200, posted.text
    assert [r["method"] for r in a.seen] == ["GET"]
    assert [r["method"] for r in b.seen] == ["POST"]
    assert refused.status_code == 403, refused.text
    assert any("ticket.comment" in reason for reason in _reasons(refused)), refused.text


def _reasons(response: Any) -> list[str]:
    body = response.json()
    return [body["detail"], *body.get("reasons", [])]


@pytest.mark.req("E8", "Z2")
def test_a_method_no_route_serves_is_not_proxied_by_another_route(
    make_settings: MakeSettings, two_upstreams: tuple[Upstream, Upstream]
) -> None:
    a, b = two_upstreams
    svc = build_services(make_settings(routes=_routes(a.url, b.url)))
    svc.users.create("sam", PASSWORD, roles=("support",))
    with TestClient(create_app(svc), base_url="http://127.0.0.1") as client:
        sam = bearer(login(client, "sam")["access_token"])
        deleted = client.delete("/api/x/1", headers=sam)
    svc.close()
    assert deleted.status_code in (404, 405), deleted.text
    assert a.seen == []
    assert b.seen == []


@pytest.mark.req("E8", "Z2")
@pytest.mark.parametrize(
    ("first", "second"),
    [
        (("GET",), ("GET", "POST")),  # both route GET
        ((), ("POST",)),  # the first routes every method
        (("get",), ("GET",)),  # one method, spelled in two cases
    ],
)
def test_two_routes_that_match_one_request_are_refused_at_start(
    make_settings: MakeSettings, first: tuple[str, ...], second: tuple[str, ...]
) -> None:
    routes = (
        RouteDef(prefix="/api/x", methods=first, action="ticket.read", upstream="http://a"),
        RouteDef(prefix="/api/x/", methods=second, action="ticket.comment", upstream="http://b"),
    )
    with pytest.raises(ConfigError) as caught:
        registry_for(policy_config(make_settings(routes=routes)))
    named = [p for p in caught.value.problems if "'/api/x'" in p and "'/api/x/'" in p]
    assert named, caught.value.problems
    assert "disjoint methods" in named[0]
