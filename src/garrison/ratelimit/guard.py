"""Apply every matching limit to one request: 429 when one is spent, a policy when Redis is down.

An unreachable limiter is never silent: it is logged (once per second at most) and counted through
``on_error``; auth endpoints pass ``fail_closed=True`` (503), everything else follows
``GARRISON_REDIS_FAIL_OPEN``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass, field

from garrison.errors import RateLimitedError, UnavailableError
from garrison.principal import Principal
from garrison.ratelimit.lease import RequestLimiter
from garrison.ratelimit.rules import RateRules, Rule

log = logging.getLogger("garrison.ratelimit")


#: Rules with their counter resolved ahead of time, or None where the counter is the client's IP.
Plan = tuple[tuple[Rule, str | None], ...]


@dataclass(eq=False, repr=False)
class RateGuard:
    limiter: RequestLimiter
    rules: RateRules
    _: KW_ONLY
    fail_open: bool
    on_limited: Callable[[str], None] = lambda group: None
    on_error: Callable[[], None] = lambda: None
    _last_log: float = field(default=0.0, init=False)

    async def check(
        self,
        path: str,
        group: str | None,
        principal: Principal | None,
        tenant: str | None,
        ip: str | None,
        *,
        fail_closed: bool = False,
    ) -> None:
        """Spend one unit of every matching limit; ``RateLimitedError`` when one is exhausted."""
        await self.spend(self.plan(path, group, principal, tenant), ip, fail_closed=fail_closed)

    def plan(
        self, path: str, group: str | None, principal: Principal | None, tenant: str | None
    ) -> Plan:
        """The limits a request spends, with every counter that does not depend on the IP."""
        return tuple(
            (rule, None if rule.by_ip(principal, tenant) else rule.subject(principal, tenant, None))
            for rule in self.rules.for_request(path, group)
        )

    async def spend(self, plan: Plan, ip: str | None, *, fail_closed: bool = False) -> None:
        """``check`` for a request planned before (a remembered admission)."""
        for rule, counter in plan:
            key = counter or rule.subject(None, None, ip)
            try:
                decision = await self.limiter.hit(key, rule.limit, rule.window)
            except UnavailableError:
                self._unavailable()
                if fail_closed or not self.fail_open:
                    raise
                continue
            if not decision.allowed:
                self.on_limited(rule.group)
                raise RateLimitedError(decision.retry_after)

    def _unavailable(self) -> None:
        self.on_error()
        now = time.monotonic()
        if now - self._last_log >= 1.0:
            self._last_log = now
            log.warning(
                "rate limiter unavailable; failing %s", "open" if self.fail_open else "closed"
            )
