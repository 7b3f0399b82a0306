"""The redaction layer (C6): keys that name secrets, and values that look like credentials."""

from __future__ import annotations

import pytest

from garrison.app import Services
from garrison.audit.redact import REDACTED, redact, redact_text
from garrison.identity.passwords import hash_password
from garrison.identity.service import Client


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


def _real_shapes(services: Services) -> dict[str, str]:
    """One of each secret Garrison itself produces, made by the code that makes it."""
    user = services.users.create("shapes", "a passphrase for the redaction test")
    api_key, _ = services.api_keys.create(user.id, ("read",), tenant=None)
    pair = services.auth.login("shapes", "a passphrase for the redaction test", Client("127.0.0.1"))
    return {
        "argon2id hash": hash_password("a passphrase for the redaction test"),
        "refresh token": pair.refresh_token,
        "access token (JWT)": pair.access_token,
        "API key": api_key,
    }


@pytest.mark.req("C6")
def test_every_secret_shape_garrison_produces_is_redacted(services: Services) -> None:
    for what, secret in _real_shapes(services).items():
        for text in (
            secret,
            f"failed: {secret}",
            f'Failing row contains (u-1, dave, null, {secret}, ["user"], null, 1.0)',
            f"{{'password_hash': '{secret}', 'id': 'u-1'}}",
        ):
            cleaned = redact_text(text)
            assert secret not in cleaned, what
            # nothing of the secret's tail survives either (a hash's digest part, a key's secret)
            assert secret[-16:] not in cleaned, what
            assert REDACTED in cleaned


@pytest.mark.req("C6")
def test_dollar_amounts_and_plain_words_are_left_alone() -> None:
    assert redact_text("costs $5 and $10; basic plan") == "costs $5 and $10; basic plan"
