"""The canonical path that is both authorized and served (E8, Z2)."""

from __future__ import annotations

import pytest

from garrison.paths import canonical_path


@pytest.mark.req("E8", "Z2")
@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("/api/tickets/1?x=1", "/api/tickets/1"),
        ("//admin///users", "/admin/users"),
        ("/a/./b/", "/a/b/"),
        ("/%2e/admin", "/admin"),
        ("relative", "/relative"),
        ("/caf%c3%a9", "/caf%C3%A9"),
    ],
)
def test_canonical_path(raw: str, expected: str) -> None:
    assert canonical_path(raw) == expected


@pytest.mark.req("E8", "Z2")
@pytest.mark.parametrize(
    "raw",
    [
        "/a%00b",
        "/a\\..\\admin",
        "/a%5c..%5cadmin",
        "/bad%ff",
        "/public/../admin/users",  # a router matching the raw path serves it under /public
        "/public/%2e%2e/admin",
        "/public/%2E%2E%2Fadmin",
        "/../../etc/passwd",
    ],
)
def test_ambiguous_paths_are_refused(raw: str) -> None:
    assert canonical_path(raw) is None
