"""The canonical path that is both authorized and served (E8, Z2)."""

from __future__ import annotations

import pytest

from garrison.gateway.paths import canonical_path


@pytest.mark.req("E8", "Z2")
@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("/api/tickets/1?x=1", "/api/tickets/1"),
        ("/public/../admin/users", "/admin/users"),
        ("/public/%2e%2e/admin", "/admin"),
        ("/public/%2E%2E%2Fadmin", "/admin"),
        ("//admin///users", "/admin/users"),
        ("/a/./b/", "/a/b/"),
        ("/../../etc/passwd", "/etc/passwd"),
        ("relative", "/relative"),
        ("/caf%C3%A9", "/café"),
    ],
)
def test_canonical_path(raw: str, expected: str) -> None:
    assert canonical_path(raw) == expected


@pytest.mark.req("E8", "Z2")
@pytest.mark.parametrize("raw", ["/a%00b", "/a\\..\\admin", "/a%5c..%5cadmin", "/bad%ff"])
def test_ambiguous_paths_are_refused(raw: str) -> None:
    assert canonical_path(raw) is None
