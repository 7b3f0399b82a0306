"""``/openapi.json`` and ``/docs`` (U2): every route described, a valid OpenAPI 3.1 document, the
request bodies the routes' own models, every error problem+json; the page under the strict CSP."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from typing import Any

import pytest
from openapi_spec_validator import validate
from pydantic import BaseModel
from starlette.routing import Route
from starlette.testclient import TestClient

from garrison.gateway import openapi
from garrison.gateway.asgi import app_routes
from garrison.gateway.edge import content_security_policy
from garrison.gateway.routes import admin, auth, decide, self_service, vault

METHODS = {"get", "put", "post", "delete", "patch"}


def served() -> set[tuple[str, str]]:
    """(method, path) of every Starlette route and every framework-free route."""
    pairs = set()
    for route in app_routes():
        assert isinstance(route, Route), route
        if openapi.is_browser_page(route.path):
            continue  # the console's HTML pages: not API
        for method in route.methods or {"GET"}:
            if method != "HEAD":  # Starlette answers HEAD for every GET route
                pairs.add((method, route.path))
    pairs.update(("GET", path) for path in openapi.FAST_ROUTES)
    return pairs


def spec(client: TestClient) -> dict[str, Any]:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body: dict[str, Any] = response.json()
    return body


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method, path, op)
        for path, item in document["paths"].items()
        for method, op in item.items()
        if method in METHODS
    ]


@pytest.mark.req("U2")
def test_every_route_is_described_and_nothing_else(client: TestClient) -> None:
    described = {(m.upper(), p) for m, p, _ in operations(spec(client))}
    assert served() - described == set(), "routes without a description"
    assert described - served() == set(), "descriptions of routes that do not exist"
    # the builder refuses a route it has no description for
    with pytest.raises(LookupError, match="/admin/brand-new"):
        openapi.build([*served(), ("GET", "/admin/brand-new")])


@pytest.mark.req("U2")
def test_the_description_is_valid_openapi_3_1(client: TestClient) -> None:
    document = spec(client)
    assert document["openapi"] == "3.1.0"
    validate(document)  # openapi-spec-validator: raises on any violation of the 3.1 schema


@pytest.mark.req("U2", "E7")
def test_request_bodies_are_the_routes_own_models(client: TestClient) -> None:
    schemas = spec(client)["components"]["schemas"]
    models: list[type[BaseModel]] = [
        auth.LoginBody,
        auth.RefreshBody,
        auth.LogoutBody,
        auth.MfaVerifyBody,
        auth.MfaCodeBody,
        auth.MfaRemoveBody,
        self_service.ChangePassword,
        admin.CreateUser,
        admin.PatchUser,
        admin.DeleteUser,
        admin.CreateApiKey,
        admin.RotateKeys,
        decide.DecideBody,
        vault.PutSecret,
    ]
    for model in models:
        generated = model.model_json_schema(ref_template="#/components/schemas/{model}")
        generated.pop("$defs", None)
        assert schemas[model.__name__] == generated, model.__name__
    bodies = {
        op["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
        for _, _, op in operations(spec(client))
        if "requestBody" in op
    }
    assert bodies == {m.__name__ for m in models}


@pytest.mark.req("U2", "E7")
def test_every_error_is_problem_json_and_429_names_retry_after(client: TestClient) -> None:
    document = spec(client)
    shared = document["components"]["responses"]
    problem = document["components"]["schemas"]["Problem"]
    assert set(problem["required"]) == {"type", "title", "status", "detail"}
    assert problem["properties"]["reasons"]["items"] == {"type": "string"}
    for name, response in shared.items():
        assert list(response["content"]) == ["application/problem+json"], name
    assert shared["TooManyRequests"]["headers"]["Retry-After"]["required"] is True
    assert "WWW-Authenticate" in shared["Unauthorized"]["headers"]
    assert "X-Auth-Deny-Reason" in shared["Forbidden"]["headers"]
    for method, path, op in operations(document):
        statuses = set(op["responses"])
        for status, response in op["responses"].items():
            readiness = (path, status) == ("/readyz", "503")  # API.md: the checks, not a problem
            if int(status) >= 400 and "$ref" not in response and not readiness:
                pytest.fail(f"{method} {path} {status}: not the shared problem response")
        if op["security"]:
            assert {"401", "403"} <= statuses, (method, path)
        if "requestBody" in op:
            assert {"400", "413", "422"} <= statuses, (method, path)
        if "{" in path:
            assert "404" in statuses, (method, path)
        if path not in ("/healthz", "/readyz"):  # the probes are never rate limited
            assert {"429", "503"} <= statuses, (method, path)


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


@pytest.mark.req("U2")
def test_docs_page_is_server_rendered_under_the_strict_csp(client: TestClient) -> None:
    response = client.get("/docs")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    csp = response.headers["content-security-policy"]
    assert csp == content_security_policy(["'self'"]).decode()
    assert "script-src 'self'" in csp
    assert "style-src 'self'" in csp
    page = _Page()
    page.feed(response.text)
    names = [tag for tag, _ in page.tags]
    assert "script" not in names
    assert "style" not in names
    for tag, attrs in page.tags:
        assert "style" not in attrs, tag
        assert not any(a.startswith("on") for a in attrs), (tag, attrs)  # no inline handlers
        for key in ("href", "src"):
            target = attrs.get(key)
            if target is not None:  # this origin only
                assert target.startswith(("/", "#")), target
                assert not target.startswith("//"), target
    # phone and keyboard: a viewport, a skip link to the main landmark, every operation linked
    assert ("meta", {"name": "viewport", "content": "width=device-width, initial-scale=1"}) in (
        page.tags
    )
    links = {attrs.get("href") for tag, attrs in page.tags if tag == "a"}
    ids = {attrs.get("id") for _, attrs in page.tags}
    assert "#main" in links
    assert "main" in ids
    document = spec(client)
    for method, path, _ in operations(document):
        anchor = f"{method}-" + re.sub(r"[^a-z0-9]+", "-", path.lower()).strip("-")
        assert f"#{anchor}" in links, (method, path)
        assert anchor in ids, (method, path)
    assert "Retry-After" in response.text
    assert "application/problem+json" in response.text
    sheet = client.get("/docs/docs.css")
    assert sheet.status_code == 200
    assert sheet.headers["content-type"].startswith("text/css")
    assert "@media (max-width" in sheet.text


@pytest.mark.req("U2")
def test_docs_and_description_are_public(client: TestClient) -> None:
    for path in ("/openapi.json", "/docs", "/docs/docs.css"):
        assert client.get(path).status_code == 200, path
    document = spec(client)
    public = {p for _, p, op in operations(document) if not op["security"]}
    assert {"/openapi.json", "/docs", "/healthz", "/auth/login"} <= public
    assert "/admin/users" not in public
