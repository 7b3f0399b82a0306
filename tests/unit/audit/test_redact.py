"""The redaction layer (C6): keys that name secrets, and values that look like credentials."""

from __future__ import annotations

import pytest

from garrison.audit.redact import REDACTED, redact, redact_text


@pytest.mark.req("C6")
@pytest.mark.parametrize(
    "key",
    ["password", "new_password", "client_secret", "refresh_token", "api_key", "Authorization"],
)
def test_sensitive_keys_are_redacted_at_any_depth(key: str) -> None:
    assert redact({"outer": [{key: "s3cr3t-value"}]}) == {"outer": [{key: REDACTED}]}


@pytest.mark.req("C6")
@pytest.mark.parametrize(
    "text",
    [
        "token eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiIxMjMifQ.c2lnbmF0dXJl here",
        "grt_" + "A" * 40,
        "gk_abcdefgh_" + "B" * 32,
        "Authorization: Bearer abc.def",
    ],
)
def test_credential_shaped_values_are_redacted_in_free_text(text: str) -> None:
    cleaned = redact_text(text)
    assert REDACTED in cleaned
    for secret in ("eyJzdWIi", "A" * 40, "B" * 32, "abc.def"):
        assert secret not in cleaned


@pytest.mark.req("C6")
def test_ordinary_values_pass_through() -> None:
    assert redact({"user_id": "u-1", "count": 3, "kid": "rs256-1-ab"}) == {
        "user_id": "u-1",
        "count": 3,
        "kid": "rs256-1-ab",
    }
