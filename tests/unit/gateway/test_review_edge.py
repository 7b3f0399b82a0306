"""Attacks on the edge layer found in review, each with the test that stops it (E3, E4, E5, E8)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, cast

import httpx
import pytest
from starlette.testclient import TestClient
from starlette.types import Scope

from garrison.admission import Pipeline
from garrison.app import build_services
from garrison.config.settings import RateLimitDef, RouteDef
from garrison.gateway.asgi import create_app
from garrison.gateway.forwarded import TrustedProxies, resolve
from garrison.gateway.proxy import ReverseProxy
from garrison.identity.users import User
from garrison.paths import canonical_path
from tests.conftest import MakeSettings, login
from tests.unit.gateway.test_edge import Echo, capped, run
from tests.unit.gateway.test_verify import http, svc, user  # noqa: F401  (fixtures)


# -- /verify: which header names the original request -------------------------------------------
@pytest.mark.req("E8", "Z2")
def test_client_forwarded_uri_cannot_replace_the_original_uri_nginx_sets(
    http: TestClient,  # noqa: F811
) -> None:
    """nginx sets ``X-Original-URI`` and passes the client's other headers to the subrequest: a
    client's own ``X-Forwarded-Uri`` naming a public path must not be what is authorized."""
    response = http.get(
        "/verify",
        headers={
            "X-Original-Method": "GET",
            "X-Original-URI": "/api/tickets/7",  # what nginx will serve
            "X-Forwarded-Method": "GET",  # the client's own
            "X-Forwarded-Uri": "/public/status",
        },
    )
    assert response.status_code == 400
    assert "x-auth-user" not in response.headers


@pytest.mark.req("E8", "Z2")
def test_client_original_uri_cannot_replace_the_forwarded_uri_caddy_sets(
    http: TestClient,  # noqa: F811
) -> None:
    response = http.get(
        "/verify",
        headers={
            "X-Forwarded-Method": "GET",
            "X-Forwarded-Uri": "/api/tickets/7",  # what Caddy will serve
            "X-Original-Method": "GET",  # the client's own
            "X-Original-URI": "/public/status",
        },
    )
    assert response.status_code != 200


@pytest.mark.req("E8", "Z2")
def test_client_forwarded_method_cannot_replace_the_original_method(
    http: TestClient,  # noqa: F811
    user: Callable[..., User],  # noqa: F811
) -> None:
    user("mallory", roles=("support",), tenant="acme")
    token = login(http, "mallory")["access_token"]
    response = http.get(
        "/verify",
        headers={
            "Authorization": f"Bearer {token}",
            "X-Original-Method": "DELETE",
            "X-Original-URI": "/api/tickets/7",
            "X-Forwarded-Method": "GET",
        },
    )
    assert response.status_code == 400


@pytest.mark.req("E8")
def test_both_header_families_agreeing_is_fine(http: TestClient) -> None:  # noqa: F811
    response = http.get(
        "/verify",
        headers={
            "X-Original-Method": "GET",
            "X-Original-URI": "/public/status",
            "X-Forwarded-Method": "get",
            "X-Forwarded-Uri": "/public/status",
        },
    )
    assert response.status_code == 200


@pytest.mark.req("E8", "T1")
@pytest.mark.parametrize("name", ["X-Tenant-ID", "Authorization"])
def test_a_credential_or_tenant_sent_twice_with_different_values_is_400(
    http: TestClient,  # noqa: F811
    user: Callable[..., User],  # noqa: F811
    name: str,
) -> None:
    """Garrison would check the first value while the proxy hands both to a backend that may read
    the last: ``X-Tenant-ID: acme`` then ``X-Tenant-ID: globex`` must not pass as ``acme``."""
    user("trent", roles=("support",), tenant="acme")
    token = login(http, "trent")["access_token"]
    first, second = (
        ("acme", "globex") if name == "X-Tenant-ID" else (f"Bearer {token}", "Bearer other")
    )
    headers = [
        ("X-Original-Method", "GET"),
        ("X-Original-URI", "/api/tickets/7"),
        ("Authorization", f"Bearer {token}"),
        ("X-Tenant-ID", "acme"),
    ]
    headers = [(k, v) for k, v in headers if k != name] + [(name, first), (name, second)]
    assert http.get("/verify", headers=headers).status_code == 400
    same = [(k, v) for k, v in headers if (k, v) != (name, second)] + [(name, first)]
    assert http.get("/verify", headers=same).status_code == 200


# -- path parameters on dot segments (Tomcat, Spring, Jetty resolve "..;" as "..") ---------------
@pytest.mark.req("E8", "Z2")
@pytest.mark.parametrize(
    "raw",
    ["/public/..;/api/tickets/7", "/public/..;x=1/admin", "/public/.;/x", "/public/%2e%2e;/a"],
)
def test_dot_segment_with_path_parameter_is_refused(raw: str) -> None:
    assert canonical_path(raw) is None


@pytest.mark.req("E8", "Z2")
def test_dot_segment_with_path_parameter_is_400_at_verify(http: TestClient) -> None:  # noqa: F811
    response = http.get(
        "/verify",
        headers={"X-Original-Method": "GET", "X-Original-URI": "/public/..;/api/tickets/7"},
    )
    assert response.status_code == 400


@pytest.mark.req("E8", "Z2")
def test_raw_fragment_in_the_original_uri_is_400_at_verify(http: TestClient) -> None:  # noqa: F811
    """nginx accepts ``GET /public#/../api/tickets/7`` and hands the backend that raw target: it
    must not be authorized as ``/public`` (a request target never carries a fragment)."""
    response = http.get(
        "/verify",
        headers={"X-Original-Method": "GET", "X-Original-URI": "/public#/../api/tickets/7"},
    )
    assert response.status_code == 400


@pytest.mark.req("E8")
def test_a_hash_in_the_query_or_encoded_in_the_path_is_fine() -> None:
    assert canonical_path("/public/status?q=a#b") == "/public/status"
    assert canonical_path("/files/a%23b") == "/files/a%23b"  # stays encoded: still one segment


@pytest.mark.req("E8")
@pytest.mark.parametrize("raw", ["/a/..b/c", "/a/b.c", "/.well-known/x"])
def test_dots_inside_a_segment_still_pass(raw: str) -> None:
    assert canonical_path(raw) == raw


@pytest.mark.req("E8", "Z2")
@pytest.mark.parametrize("raw", ["/a;b/c", "/files/report;v=2", "/a/b.;"])
def test_any_semicolon_in_the_path_is_refused(raw: str) -> None:
    """Servlet containers drop ``;params`` from every segment (``/admin;x`` is ``/admin``)."""
    assert canonical_path(raw) is None


# -- proxy: identity headers spelled with underscores -------------------------------------------
def _proxy() -> ReverseProxy:
    client = cast(httpx.AsyncClient, None)
    return ReverseProxy(Echo(), cast(Pipeline, None), TrustedProxies([]), [], client)


@pytest.mark.req("E8", "T1")
@pytest.mark.parametrize(
    "name", [b"x_auth_user", b"x-auth_roles", b"x_auth_tenant", b"x-auth-email", b"x_forwarded_for"]
)
def test_spoofed_identity_header_variants_never_reach_the_upstream(name: bytes) -> None:
    """WSGI/CGI backends map ``X_Auth_User`` and ``X-Auth-User`` to the same ``HTTP_X_AUTH_USER``."""
    scope: Scope = {
        "type": "http",
        "scheme": "http",
        "client": ("203.0.113.9", 4000),
        "headers": [(name, b"admin"), (b"accept", b"*/*")],
    }
    sent = _proxy()._headers(scope)
    names = [n.lower().replace(b"_", b"-") for n, _ in sent]
    assert name.replace(b"_", b"-") not in names or name == b"x_forwarded_for"
    assert (name, b"admin") not in sent
    assert (b"accept", b"*/*") in sent


# -- size caps: the cap of the path that is served ----------------------------------------------
@pytest.mark.req("E4")
@pytest.mark.parametrize("path", ["//upload/a", "/x/../upload/a", "/%75pload/a"])
def test_route_cap_cannot_be_dodged_by_a_non_canonical_path(path: str) -> None:
    routes = [RouteDef(prefix="/upload", action="x", max_body_bytes=10)]
    echo, app = capped(default=1000, routes=routes)
    result = run(
        app, path=path, method="POST", headers=[("Content-Length", "50")], chunks=[b"x" * 50]
    )
    assert result.status == 413
    assert echo.seen == {}


@pytest.mark.req("E4")
def test_route_cap_prefix_is_segment_wise() -> None:
    routes = [RouteDef(prefix="/upload", action="x", max_body_bytes=10_000)]
    _, app = capped(default=100, routes=routes)
    assert run(app, path="/uploadX", method="POST", chunks=[b"x" * 500]).status == 413


# -- X-Forwarded-For in several header lines (HAProxy `option forwardfor` adds its own line) -----
@pytest.mark.req("E5")
def test_forwarded_for_split_over_header_lines_is_read_as_one_list() -> None:
    scope: dict[str, Any] = {
        "type": "http",
        "scheme": "http",
        "client": ("10.0.0.2", 4000),
        "headers": [
            (b"x-forwarded-for", b"6.6.6.6"),  # the client's forgery
            (b"x-forwarded-for", b"198.51.100.7"),  # the trusted proxy's own line
        ],
    }
    assert resolve(scope, TrustedProxies(["10.0.0.0/8"])) == "198.51.100.7"


@pytest.mark.req("E5", "E6")
def test_forwarded_proto_split_over_header_lines_takes_the_nearest() -> None:
    scope: dict[str, Any] = {
        "type": "http",
        "scheme": "http",
        "client": ("10.0.0.2", 4000),
        "headers": [(b"x-forwarded-proto", b"https"), (b"x-forwarded-proto", b"http")],
    }
    resolve(scope, TrustedProxies(["10.0.0.0/8"]))
    assert scope["scheme"] == "http"


# -- rate limits keyed by tenant use the tenant that was checked ---------------------------------
@pytest.fixture
def tenant_limited(make_settings: MakeSettings) -> Iterator[TestClient]:
    settings = make_settings(
        routes=(RouteDef(prefix="/public", action="health.read", rate_limit_group="pub"),),
        rate_limits={
            "pub": RateLimitDef(rate_limit_window_sec=60, rate_limit_per_window=3, key="tenant")
        },
    )
    services = build_services(settings)
    services.keyring.load()
    with TestClient(create_app(services), base_url="http://127.0.0.1") as client:
        yield client
    services.close()


@pytest.mark.req("E3", "T1")
def test_tenant_keyed_limit_cannot_be_dodged_with_made_up_tenant_headers(
    tenant_limited: TestClient,
) -> None:
    statuses = [
        tenant_limited.get(
            "/verify",
            headers={
                "X-Original-Method": "GET",
                "X-Original-URI": "/public/status",
                "X-Tenant-ID": f"t{i}",
            },
        ).status_code
        for i in range(6)
    ]
    assert 429 in statuses


# -- trusted proxies on a dual-stack socket -----------------------------------------------------
@pytest.mark.req("E5")
def test_ipv4_mapped_peer_is_the_same_trusted_proxy() -> None:
    """A dual-stack listener reports nginx at 127.0.0.1 as ``::ffff:127.0.0.1``."""
    proxies = TrustedProxies(["127.0.0.1/32"])
    assert proxies.trusts("::ffff:127.0.0.1")
    assert proxies.client_ip("::ffff:127.0.0.1", b"198.51.100.7") == "198.51.100.7"
    assert not proxies.trusts("::ffff:127.0.0.2")


# -- the admission cache is not a place to store an attacker's megabytes -------------------------
@pytest.mark.req("E8", "E3")
def test_admission_cache_does_not_keep_oversized_requests(
    http: TestClient,  # noqa: F811
    user: Callable[..., User],  # noqa: F811
) -> None:
    """Caddy forwards URIs up to 1 MB; each distinct admitted URI (or ``Bearer`` padded with spaces)
    would otherwise sit in the 50 000-entry cache: tens of gigabytes from one ordinary account."""
    user("pad", roles=("support",), tenant="acme")
    token = login(http, "pad")["access_token"]
    front = cast(Any, http.app)
    gate: Pipeline = front.fast_routes["/verify"].pipeline
    for i in range(3):
        response = http.get(
            "/verify",
            headers={
                "X-Original-Method": "GET",
                "X-Original-URI": f"/api/tickets/{i}/" + "a" * 65_536,
                "Authorization": "Bearer" + " " * (i + 1) + token,
            },
        )
        assert response.status_code == 200, response.text
    assert sum(len(repr(key)) for key in gate._admitted) < 16_384
    small = http.get(
        "/verify",
        headers={
            "X-Original-Method": "GET",
            "X-Original-URI": "/api/tickets/1",
            **{"Authorization": f"Bearer {token}"},
        },
    )
    assert small.status_code == 200
    assert len(gate._admitted) == 1  # ordinary requests are still remembered


# -- A8 through forward auth: the original request's query string --------------------------------
@pytest.mark.req("A8", "E8")
@pytest.mark.parametrize("query", ["access_token=abc", "x=1&api_key=gk_abc", "TOKEN=t"])
def test_credential_in_the_original_query_string_is_refused(
    http: TestClient,  # noqa: F811
    user: Callable[..., User],  # noqa: F811
    query: str,
) -> None:
    """Behind nginx the client's query string reaches Garrison only inside X-Original-URI."""
    user("quinn", roles=("support",), tenant="acme")
    token = login(http, "quinn")["access_token"]
    uri = f"/api/tickets/7?{query}"
    with_header = http.get(
        "/verify",
        headers={
            "X-Original-Method": "GET",
            "X-Original-URI": uri,
            "Authorization": f"Bearer {token}",
        },
    )
    assert with_header.status_code == 400
    alone = http.get("/verify", headers={"X-Original-Method": "GET", "X-Original-URI": uri})
    assert alone.status_code == 401
    assert alone.headers["www-authenticate"].startswith("Bearer")
    fine = http.get(
        "/verify",
        headers={
            "X-Original-Method": "GET",
            "X-Original-URI": "/api/tickets/7?tokens=3&page_token_x=1",
            "Authorization": f"Bearer {token}",
        },
    )
    assert fine.status_code == 200
