"""Which limits a request spends, and whose budget (E3)."""

from __future__ import annotations

import anyio
import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from garrison.app import rate_limit_config
from garrison.config.settings import RateLimitDef
from garrison.errors import RateLimitedError, UnavailableError
from garrison.principal import Principal
from garrison.ratelimit.guard import RateGuard
from garrison.ratelimit.lease import LeasedLimiter, LocalLimiter
from garrison.ratelimit.limiter import MemoryLimiter, RedisLimiter
from garrison.ratelimit.rules import RateRules
from tests.conftest import MakeSettings
from tests.support import free_port

ALICE = Principal(sub="u1", username="alice", roles=frozenset(), tenant="acme", via="jwt")
KEY = Principal(
    sub="u1", username="alice", roles=frozenset(), tenant="acme", via="api_key", credential_id="k9"
)


def rules(make_settings: MakeSettings) -> RateRules:
    return RateRules(
        rate_limit_config(
            make_settings(
                GARRISON_RATE_LIMIT_PER_WINDOW="1000",
                rate_limits={
                    "api": RateLimitDef(rate_limit_per_window=5, prefixes=("/api",)),
                    "keys": RateLimitDef(rate_limit_per_window=5, key="api_key"),
                    "tenants": RateLimitDef(rate_limit_per_window=5, key="tenant"),
                    "ips": RateLimitDef(rate_limit_per_window=5, key="ip"),
                },
            )
        )
    )


@pytest.mark.req("E3")
def test_groups_by_route_and_prefix(make_settings: MakeSettings) -> None:
    found = rules(make_settings)
    assert [r.group for r in found.for_request("/other")] == ["default"]
    assert found.default.limit == 1000
    assert [r.group for r in found.for_request("/api/x", "keys")] == ["default", "keys", "api"]


@pytest.mark.req("E3")
def test_each_group_counts_its_own_subject(make_settings: MakeSettings) -> None:
    found = rules(make_settings)
    assert found.default.subject(ALICE, "acme", "1.1.1.1") == "default:identity:u1"
    assert found.default.subject(None, None, "1.1.1.1") == "default:ip:1.1.1.1"
    assert found.groups["keys"].subject(KEY, "acme", "1.1.1.1") == "keys:api_key:k9"
    assert found.groups["keys"].subject(ALICE, "acme", "1.1.1.1") == "keys:identity:u1"
    assert found.groups["tenants"].subject(ALICE, "acme", "1.1.1.1") == "tenants:tenant:acme"
    assert found.groups["tenants"].subject(ALICE, None, "1.1.1.1") == "tenants:ip:1.1.1.1"
    assert found.groups["ips"].subject(ALICE, "acme", "1.1.1.1") == "ips:ip:1.1.1.1"


@pytest.mark.req("E3")
def test_guard_refuses_with_retry_after(make_settings: MakeSettings) -> None:
    limited: list[str] = []
    guard = RateGuard(
        LocalLimiter(MemoryLimiter()),
        rules(make_settings),
        fail_open=False,
        on_limited=limited.append,
    )

    async def main() -> None:
        for _ in range(5):
            await guard.check("/api/x", None, ALICE, "acme", "1.1.1.1")
        await guard.check("/api/x", None, ALICE, "acme", "1.1.1.1")

    with pytest.raises(RateLimitedError) as caught:
        anyio.run(main)
    assert caught.value.retry_after >= 1
    assert limited == ["api"]


@pytest.mark.req("E3", "A13")
@pytest.mark.parametrize("fail_open", [True, False])
def test_unreachable_redis_fails_by_setting_and_is_counted(
    make_settings: MakeSettings, fail_open: bool
) -> None:
    dead = redis.Redis(
        port=free_port(),
        socket_connect_timeout=0.2,
        socket_timeout=0.2,
        retry=Retry(NoBackoff(), 0),
    )
    errors: list[int] = []
    guard = RateGuard(
        LeasedLimiter(RedisLimiter(dead, "x")),
        rules(make_settings),
        fail_open=fail_open,
        on_error=lambda: errors.append(1),
    )

    async def other() -> None:
        await guard.check("/api/x", None, ALICE, "acme", "1.1.1.1")

    async def auth_endpoint() -> None:
        await guard.check("/auth/login", None, None, None, "1.1.1.1", fail_closed=True)

    if fail_open:
        anyio.run(other)
    else:
        with pytest.raises(UnavailableError):
            anyio.run(other)
    with pytest.raises(UnavailableError):
        anyio.run(auth_endpoint)  # auth endpoints fail closed whatever the setting
    assert errors
    dead.close()
