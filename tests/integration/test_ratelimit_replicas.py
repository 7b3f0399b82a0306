"""Two ``garrison serve`` processes sharing Redis hold one global limit (E3), within 2 %.

Each node leases budget from the shared window in batches (``ratelimit.lease``); the sum of what
both admit may never pass the limit and may fall short of it by at most 2 %.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.edge_support import create_user, garrison_env, token
from tests.support import REDIS_URL, LiveServer, redis_client, redis_prefix

LIMIT = 2000
TOML = f"""
[[routes]]
prefix = "/api/tickets"
action = "ticket.comment"
rate_limit_group = "shared"

[rate_limits.shared]
rate_limit_window_sec = 120
rate_limit_per_window = {LIMIT}
key = "identity"
"""


@pytest.fixture
def replicas(tmp_path: Path) -> Iterator[tuple[list[LiveServer], str]]:
    client = redis_client()
    prefix = redis_prefix()
    env = garrison_env(
        tmp_path,
        TOML,
        REDIS_URL=REDIS_URL,
        USE_REDIS_LIMITER="true",
        GARRISON_REDIS_PREFIX=prefix,
        GARRISON_ISSUER="http://garrison.test",  # replicas share one public address and issuer
    )
    create_user(env, "sam", "--role", "support")
    servers = [LiveServer(env), LiveServer(env)]
    try:
        for server in servers:
            server.start()
        yield servers, token(servers[0].url, "sam")
    finally:
        for server in servers:
            server.stop()
        for key in client.scan_iter(f"{prefix}:*"):
            client.delete(key)
        client.close()


async def _hammer(urls: list[str], bearer: str, total: int) -> list[int]:
    headers = {
        "Authorization": f"Bearer {bearer}",
        "X-Original-Method": "POST",
        "X-Original-URI": "/api/tickets/1",
    }
    limits = httpx.Limits(max_connections=16)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:
        sem = asyncio.Semaphore(16)

        async def one(i: int) -> int:
            async with sem:
                response = await client.get(f"{urls[i % len(urls)]}/verify", headers=headers)
                return response.status_code

        return await asyncio.gather(*(one(i) for i in range(total)))


@pytest.mark.req("E3")
def test_two_replicas_hold_one_global_limit(replicas: tuple[list[LiveServer], str]) -> None:
    servers, bearer = replicas
    codes = asyncio.run(_hammer([s.url for s in servers], bearer, int(LIMIT * 1.5)))
    admitted = codes.count(200)
    assert set(codes) <= {200, 429}
    assert admitted <= LIMIT
    assert admitted >= LIMIT * 0.98, admitted
