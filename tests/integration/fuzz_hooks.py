"""Schemathesis hooks for ``test_openapi_fuzz`` (loaded through ``SCHEMATHESIS_HOOKS``): the fuzzer
signs in as the admin the test created, and signs in again whenever the token stops working (the
fuzzer itself logs out, revokes sessions and rotates the signing keys in an emergency)."""

from __future__ import annotations

import os
from typing import Any

import httpx
import schemathesis

#: the operations that take a bearer token (the public ones are fuzzed without one)
_AUTHENTICATED = r"^/(admin/|v1/|metrics$|verify$|auth/me$|auth/logout$)"


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
