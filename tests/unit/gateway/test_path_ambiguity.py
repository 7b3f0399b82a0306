"""Paths a backend may read differently from Garrison, routing-override headers, and credentials
hidden in query strings (E8, Z2, E5, A8): each attack against ``/verify``, the action registry and
the built-in proxy (with a real upstream on 127.0.0.1)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import anyio
import pytest
from starlette.testclient import TestClient
from starlette.types import ASGIApp, Message, Scope

from garrison.app import Services, build_services
from garrison.config.settings import ActionDef, RouteDef
from garrison.errors import BadRequestError, ConfigError
from garrison.gateway.asgi import create_app
from garrison.gateway.proxy import ROUTING_OVERRIDES
from garrison.gateway.querycreds import has_query_credentials
from garrison.paths import AmbiguousPath, canonical_path, canonicalize
from garrison.policy.registry import Registry
from tests.conftest import MakeSettings
from tests.integration.edge_support import DEPLOY, OVERRIDE_NAMES, Upstream, recording_upstream

#: ``/api/admin`` is admin-only and everything else is public: the shape in which a path read
#: differently by the backend turns into a bypass.
ROUTES = (
    RouteDef(prefix="/", action="health.read"),
    RouteDef(prefix="/api", action="health.read"),
    RouteDef(prefix="/api/admin", action="admin.api"),
    RouteDef(prefix="/Files", action="admin.api", case_insensitive=True),
)

#: Each is served as ``/api/admin...`` by some backend (servlet containers drop ``;params``,
#: Windows drops a trailing dot or space, routers match the raw ``..``, some decode twice, some
#: ignore case, some decode ``%2F``), so none may be authorized as ``/api`` or ``/``.
SYNTAX = [
    "/api/admin;x",
    "/api/admin;jsessionid=1/users",
    "/api/admin%3Bx",
    "/api/admin.",
    "/api/admin%2e",
    "/api/admin./users",
    "/api/admin%20",
    "/api/admin%20/users",
    "/api/admin/%2e%2e/",
    "/api/admin/../",
    "/api/admin/x%2F..%2F..%2F..%2Fpublic",
    "/api/%2561dmin",
    "/api/admin%zz",
    "/api\\admin",
]
#: Letter-case variants of the case-sensitive ``/api/admin``: a case-blind backend serves them.
CASE = ["/API/admin", "/api/ADMIN/users", "/Api/Admin"]
AMBIGUOUS = SYNTAX + CASE


@pytest.fixture
def svc(make_settings: MakeSettings) -> Iterator[Services]:
    services = build_services(make_settings(routes=ROUTES))
    services.keyring.load()
    yield services
    services.close()


@pytest.fixture
def http(svc: Services) -> Iterator[TestClient]:
    with TestClient(create_app(svc), base_url="http://127.0.0.1") as client:
        yield client


def verify(http: TestClient, headers: Sequence[tuple[str, str]]) -> Any:
    return http.get("/verify", headers=list(headers))


# -- canonical form -----------------------------------------------------------------------------
@pytest.mark.req("E8", "Z2")
@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("/api/%61dmin", "/api/admin"),  # unreserved escapes are decoded
        ("/api/%7Euser/%2D", "/api/~user/-"),
        ("/api//admin/./users", "/api/admin/users"),
        ("/a/b/", "/a/b/"),
        ("/a/.", "/a/"),
        ("/caf%c3%a9", "/caf%C3%A9"),  # reserved and non-ASCII stay encoded, upper-case hex
        ("/caf\xc3\xa9", "/caf%C3%A9"),  # raw UTF-8 bytes (as latin-1) are the same path
        ("/a%3fb%23c", "/a%3Fb%23c"),
        ("/a|b{c}", "/a%7Cb%7Bc%7D"),
        ("/api/admin?x=1;y", "/api/admin"),
    ],
)
def test_canonical_form(raw: str, expected: str) -> None:
    assert canonicalize(raw) == expected
    assert canonicalize(expected) == expected  # idempotent: the registry canonicalizes again


@pytest.mark.req("E8", "Z2")
@pytest.mark.parametrize("raw", [*SYNTAX, "/a%00b", "/a%1fb", "/a%5Cb", "/a b", "/a#b"])
def test_ambiguous_paths_have_no_canonical_form(raw: str) -> None:
    with pytest.raises(AmbiguousPath) as caught:
        canonicalize(raw)
    assert caught.value.reason
    assert canonical_path(raw) is None


# -- the registry: one canonicalization, segment-wise prefixes, letter case ----------------------
def _registry() -> Registry:
    actions = {"admin.api": ActionDef()}  # health.read is one of Garrison's own actions
    return Registry.build({}, actions, ROUTES)


@pytest.mark.req("Z2")
@pytest.mark.parametrize("path", AMBIGUOUS)
def test_registry_never_matches_an_ambiguous_path_to_a_shallower_route(path: str) -> None:
    with pytest.raises(BadRequestError) as caught:
        _registry().match_route("GET", path)
    assert caught.value.code == "ambiguous_path"


@pytest.mark.req("Z2")
@pytest.mark.parametrize(
    ("path", "action"),
    [
        ("/api/admin", "admin.api"),
        ("/api/admin/", "admin.api"),
        ("/api/%61dmin/users", "admin.api"),
        ("/api/administrator", "health.read"),  # segment-wise: not under /api/admin
        ("/api/Administrator", "health.read"),  # not a case variant of /api/admin either
        ("/files/x", "admin.api"),  # a case-insensitive route matches in any case
        ("/FILES/x", "admin.api"),
        ("/fIlEs", "admin.api"),
        ("/filesystem", "health.read"),
    ],
)
def test_registry_matches_the_canonical_path(path: str, action: str) -> None:
    match = _registry().match_route("GET", path)
    assert match is not None
    assert match.action == action


@pytest.mark.req("Z2")
def test_a_route_prefix_no_request_can_match_is_refused() -> None:
    with pytest.raises(ConfigError) as caught:
        Registry.build({}, {"a": ActionDef()}, [RouteDef(prefix="/api;v=1", action="a")])
    assert "routes[0].prefix" in caught.value.problems[0]


# -- /verify ------------------------------------------------------------------------------------
@pytest.mark.req("E8", "Z2")
@pytest.mark.parametrize("path", AMBIGUOUS)
def test_verify_refuses_an_ambiguous_original_uri(http: TestClient, path: str) -> None:
    response = verify(http, [("X-Original-Method", "GET"), ("X-Original-URI", path)])
    assert response.status_code == 400, path
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["detail"].startswith(("ambiguous path", "the original URI"))


@pytest.mark.req("E8", "Z2")
@pytest.mark.parametrize("path", ["/api/%61dmin", "/files/x", "/FILES/x", "/api//admin"])
def test_verify_authorizes_the_canonical_route(http: TestClient, path: str) -> None:
    response = verify(http, [("X-Forwarded-Method", "GET"), ("X-Forwarded-Uri", path)])
    assert response.status_code == 401, path  # admin-only, not the public /api or /


@pytest.mark.req("E8")
@pytest.mark.parametrize(
    "name", ["X-Forwarded-Uri", "X-Forwarded-Method", "X-Original-URI", "X-Original-Method"]
)
def test_verify_refuses_a_repeated_original_request_header(http: TestClient, name: str) -> None:
    """Equal lines too: which of two lines the proxy, Garrison or the backend reads is not to be
    relied on, and a proxy never sends two."""
    family = ("X-Forwarded-Method", "X-Forwarded-Uri")
    if name.startswith("X-Original"):
        family = ("X-Original-Method", "X-Original-URI")
    base = [(family[0], "GET"), (family[1], "/public")]
    assert verify(http, base).status_code == 200
    doubled = [*base, (name, dict(base)[name])]
    response = verify(http, doubled)
    assert response.status_code == 400
    assert "more than once" in response.json()["detail"]


# -- credentials in the query string (A8) -------------------------------------------------------
HIDDEN_CREDENTIALS = [
    "access%5Ftoken=x",
    "%61ccess_token=x",
    "a=1;access_token=x",
    "a=1;%61pi_key=x",
    "ACCESS_TOKEN=x",
    "access.token=x",
    "access+token=x",
    "+access_token=x",
    "access_token%20=x",
    "access_token[]=x",
    "access_token[0]=x",
    "access[token=x",
    "jwt",
]


@pytest.mark.req("A8")
@pytest.mark.parametrize("query", HIDDEN_CREDENTIALS)
def test_hidden_query_credentials_are_found(query: str) -> None:
    assert has_query_credentials(query.encode())


@pytest.mark.req("A8")
@pytest.mark.parametrize(
    "query", ["", "q=access_token", "tokens=1", "my_token=1", "page=2;sort=id", "q=a+b%20c"]
)
def test_ordinary_queries_pass(query: str) -> None:
    assert not has_query_credentials(query.encode())


@pytest.mark.req("A8")
@pytest.mark.parametrize("query", HIDDEN_CREDENTIALS)
def test_hidden_query_credentials_are_refused_by_garrison_and_verify(
    http: TestClient, query: str
) -> None:
    own = http.get(f"/healthz?{query}")
    assert own.status_code == 401, query
    assert own.json()["type"].endswith("credentials_in_query")
    forwarded = verify(
        http, [("X-Forwarded-Method", "GET"), ("X-Forwarded-Uri", f"/public/x?{query}")]
    )
    assert forwarded.status_code == 401, query
    assert forwarded.json()["type"].endswith("credentials_in_query")


# -- the built-in proxy -------------------------------------------------------------------------
@pytest.fixture
def upstream() -> Iterator[Upstream]:
    with recording_upstream() as up:
        yield up


@pytest.fixture
def proxy_app(make_settings: MakeSettings, upstream: Upstream) -> Iterator[ASGIApp]:
    routes = (
        RouteDef(prefix="/api", action="health.read", upstream=upstream.url),
        RouteDef(prefix="/api/admin", action="admin.api", upstream=upstream.url),
        RouteDef(prefix="/files", action="admin.api", upstream=upstream.url, case_insensitive=True),
    )
    services = build_services(make_settings(routes=routes))
    services.keyring.load()
    yield create_app(services)
    services.close()


def _requests(
    app: ASGIApp, calls: Sequence[tuple[str, Sequence[tuple[bytes, bytes]]]]
) -> list[int]:
    """Raw ASGI requests (the exact target, which an HTTP client would normalise), in one loop."""
    statuses: list[int] = []

    async def one(target: str, headers: Sequence[tuple[bytes, bytes]]) -> None:
        path, _, query = target.partition("?")

        async def receive() -> Message:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: Message) -> None:
            if message["type"] == "http.response.start":
                statuses.append(message["status"])

        scope: Scope = {
            "type": "http",
            "method": "GET",
            "path": path,
            "raw_path": path.encode("latin-1"),
            "query_string": query.encode(),
            "scheme": "http",
            "server": ("127.0.0.1", 80),
            "client": ("127.0.0.1", 40000),
            "headers": [(b"host", b"127.0.0.1"), *headers],
        }
        await app(scope, receive, send)

    async def main() -> None:
        for target, headers in calls:
            await one(target, headers)

    anyio.run(main)
    return statuses


@pytest.mark.req("E8", "Z2")
def test_proxy_never_serves_an_ambiguous_path(proxy_app: ASGIApp, upstream: Upstream) -> None:
    statuses = _requests(proxy_app, [(path, []) for path in AMBIGUOUS])
    assert statuses == [400] * len(AMBIGUOUS)
    assert upstream.seen == []


@pytest.mark.req("E8", "Z2")
def test_proxy_sends_the_canonical_path_upstream(proxy_app: ASGIApp, upstream: Upstream) -> None:
    statuses = _requests(
        proxy_app,
        [("/api/%7Ex//y/./caf%c3%a9?q=1", []), ("/api/%61dmin", []), ("/FILES/a", [])],
    )
    assert statuses == [200, 401, 401]  # /api/%61dmin and /FILES are admin-only
    assert [seen["path"] for seen in upstream.seen] == ["/api/~x/y/caf%C3%A9?q=1"]


@pytest.mark.req("E8", "E5")
def test_proxy_drops_routing_override_headers(proxy_app: ASGIApp, upstream: Upstream) -> None:
    headers: list[tuple[bytes, bytes]] = []
    for name in sorted(ROUTING_OVERRIDES):
        headers.append((name, b"/api/admin"))
        headers.append((name.replace(b"-", b"_"), b"/api/admin"))
    assert _requests(proxy_app, [("/api/x", headers)]) == [200]
    (seen,) = upstream.seen
    got = {name.replace("_", "-") for name in seen["headers"]}
    assert not got & {n.decode() for n in ROUTING_OVERRIDES} - {"x-forwarded-host"}
    assert seen["headers"]["x-forwarded-host"] == "127.0.0.1"  # Garrison's own, from Host
    assert "/api/admin" not in seen["headers"].values()
    assert seen["path"] == "/api/x"


@pytest.mark.req("E8")
def test_the_proxy_and_the_edge_suites_strip_one_list() -> None:
    """The integration suites send ``OVERRIDE_NAMES`` through nginx, Caddy and Traefik with the
    shipped configurations; the built-in proxy strips the same set."""
    assert {n.lower().encode() for n in OVERRIDE_NAMES} == ROUTING_OVERRIDES
    for name in (b"forwarded", b"x-original-url", b"x-rewrite-url", b"x-http-method-override"):
        assert name in ROUTING_OVERRIDES


@pytest.mark.req("E8")
@pytest.mark.parametrize(
    ("config", "spelling"),
    [
        ("nginx/forward-auth.conf.template", 'proxy_set_header {} "";'),
        ("caddy/Caddyfile.forward-auth", "request_header -{}"),
        ("traefik/dynamic.yml", '{}: ""'),
    ],
)
def test_every_shipped_forward_auth_config_strips_every_override(
    config: str, spelling: str
) -> None:
    text = (DEPLOY / config).read_text().lower()
    missing = [n for n in OVERRIDE_NAMES if spelling.format(n).lower() not in text]
    assert missing == []
    if not config.startswith("nginx"):  # nginx drops names with underscores by itself
        under = [
            n for n in OVERRIDE_NAMES if spelling.format(n.replace("-", "_")).lower() not in text
        ]
        assert under == []
