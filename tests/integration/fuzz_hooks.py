"""Schemathesis hooks for ``test_openapi_fuzz`` (loaded through ``SCHEMATHESIS_HOOKS``): the fuzzer
signs in as the admin the test created, and signs in again whenever the token stops working (the
fuzzer itself logs out, revokes sessions and rotates the signing keys in an emergency)."""

from __future__ import annotations

import itertools
import os
from typing import Any

import httpx
import schemathesis

#: the operations that take a bearer token (the public ones are fuzzed without one)
_AUTHENTICATED = r"^/(admin/|v1/|metrics$|verify$|auth/me$|auth/logout$)"
_API_KEYS = ("POST", "/admin/api-keys")


@schemathesis.auth(refresh_interval=60, retry_on=[401]).apply_to(path_regex=_AUTHENTICATED)
class AdminLogin:
    def get(self, case: Any, context: Any) -> str:
        response = httpx.post(
            f"{os.environ['GARRISON_FUZZ_URL']}/auth/login",
            json={
                "username": os.environ["GARRISON_FUZZ_USER"],
                "password": os.environ["GARRISON_FUZZ_PASSWORD"],
            },
            timeout=30,
        )
        response.raise_for_status()
        token: str = response.json()["access_token"]
        return token

    def set(self, case: Any, data: str, context: Any) -> None:
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}


_turn = itertools.count()


@schemathesis.hook
def map_body(context: Any, body: Any) -> Any:
    """Every other generated API key names a user that exists, so the fuzzer reaches what lies
    behind the owner lookup (name, scopes, expiry) instead of a 404 each time."""
    operation = context.operation
    wanted = operation is not None and (operation.method.upper(), operation.path) == _API_KEYS
    if wanted and isinstance(body, dict) and "user" in body and next(_turn) % 2 == 0:
        return {**body, "user": os.environ["GARRISON_FUZZ_USER"]}
    return body


@schemathesis.hook
def map_path_parameters(context: Any, path_parameters: Any) -> Any:
    """The fuzzer may disable, demote or delete any user but the one it signs in as: once it has
    made a second admin, the first is no longer the last one the server protects (409)."""
    own = {os.environ["GARRISON_FUZZ_USER"], os.environ.get("GARRISON_FUZZ_USER_ID", "")}
    if isinstance(path_parameters, dict) and path_parameters.get("user_id") in own:
        return {**path_parameters, "user_id": f"not-{path_parameters['user_id']}"}
    return path_parameters
