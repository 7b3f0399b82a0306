"""Failure throttles (A13): lock out an (account, address) pair, not the account.

Three budgets, all counting failures only, each attempt holding its slots while it is checked:

* **pair**, one account from one address: ``per_pair`` failures are free, then the pair is locked
  for ``backoff_base`` seconds, doubling with each further failure up to ``backoff_max``
  (1 s, 2 s, 4 s ... with the defaults). A success resets the pair; ``window`` seconds after its last
  lock ends the pair is forgotten. This is the budget a guessing script meets, and the real user,
  at another address, never shares it.
* **account**, every address together: ``per_account`` failures per ``window`` (a fixed window from
  the first). Much higher than the pair's, it bounds guessing spread over many addresses; reaching
  it locks the account for every address until the window ends. ``Attempt.failed`` reports the
  failure that reaches it (once per window) as a ``Lockout``, for the caller to audit and count.
* **ip**, one address across accounts: ``per_ip`` failures per ``window`` (password spraying).

Addresses are keyed by ``address_key``: an IPv6 client owns a whole /64, so each /64 is one address.

The API, for any endpoint that checks a secret (login today; refresh and MFA later)::

    throttle = FailureThrottle(store, policy, scope="login", clock=clock)
    attempt = throttle.begin(account, ip)  # ThrottledError (429) when a budget is spent
    if not check_the_secret():
        lockout = attempt.failed()          # a Lockout when this failure reached the ceiling
        ...
    attempt.succeeded()
    # or, when the secret could not be checked at all (the database was away):
    attempt.abandoned()                     # its slots back; the pair keeps what it had

``begin`` takes one slot of each budget atomically, before the expensive check, so guesses sent
in parallel cannot outrun a budget: the refused ones take nothing. ``succeeded`` gives the account
and address slots back (successes never count) and resets the pair. Two stores implement it: in
memory for one node, and in Redis (one Lua call per step) across replicas. Time is the throttle's
clock, passed to the store, never the store's own: Redis TTLs only collect the garbage. A Redis
error raises ``UnavailableError`` (503): failure throttles always fail closed.
"""

from __future__ import annotations

import contextlib
import ipaddress
import math
import threading
from dataclasses import KW_ONLY, dataclass
from typing import Literal, Protocol

import redis

from garrison.clock import Clock, system_clock
from garrison.errors import ThrottledError, UnavailableError
from garrison.ratelimit.limiter import redis_unavailable

Budget = Literal["pair", "account", "ip"]
_BUDGETS: dict[str, Budget] = {"pair": "pair", "account": "account", "ip": "ip"}

#: Float noise in stored timestamps must not round a whole second up to the next one.
_EPSILON = 1e-3


@dataclass(frozen=True, slots=True)
class FailurePolicy:
    """A throttle's budgets; the login one is built once from the ``GARRISON_LOGIN_*`` settings
    by the composition root (``garrison.app.login_failure_policy``)."""

    per_pair: int  # failures from one address for one account before backoff starts
    per_account: int  # failures for one account, from every address, per window
    per_ip: int  # failures from one address, for every account, per window
    window: int  # seconds
    backoff_base: float  # the first lock of a pair, in seconds
    backoff_max: float  # the longest lock of a pair, in seconds

    def delay(self, failures: int) -> float:
        """How long a pair is locked after its ``failures``-th failure (0 while under budget)."""
        if failures < self.per_pair:
            return 0.0
        return min(self.backoff_max, self.backoff_base * 2.0 ** min(failures - self.per_pair, 60))


@dataclass(frozen=True, slots=True)
class Keys:
    """The three counters one attempt touches."""

    ip: str
    account: str
    pair: str


@dataclass(frozen=True, slots=True)
class Refusal:
    budget: Budget
    wait: float  # seconds until that budget admits an attempt again


@dataclass(frozen=True, slots=True)
class Lockout:
    """The failure that brought an account to its account-wide ceiling (audit it, alert on it)."""

    scope: str
    account: str
    failures: int
    window: int


class FailureStore(Protocol):
    def reserve(self, keys: Keys, policy: FailurePolicy, now: float) -> Refusal | None:
        """Take one slot of each budget, or none and say which budget refuses (the longest)."""

    def release(self, keys: Keys, now: float) -> None:
        """A success: give back the ip and account slots, forget the pair."""

    def unreserve(self, keys: Keys, now: float) -> None:
        """Nothing was checked: give back the three slots, keep the pair's earlier failures."""

    def settle(self, keys: Keys, policy: FailurePolicy, now: float) -> int | None:
        """A failure: lock the pair from now; the account's count if this failure is the first in
        its window to find the account at its ceiling."""


def address_key(ip: str | None) -> str:
    """The address a budget counts: an IPv4 address, or the /64 around an IPv6 one."""
    if not ip:
        return "-"
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


class Attempt:
    """One check of a secret, holding its slots until it ``succeeded`` or ``failed``."""

    __slots__ = ("_keys", "_throttle", "account")

    def __init__(self, throttle: FailureThrottle, keys: Keys, account: str) -> None:
        self._throttle = throttle
        self._keys = keys
        self.account = account

    def succeeded(self) -> None:
        t = self._throttle
        t.store.release(self._keys, t.clock())

    def abandoned(self) -> None:
        """The secret could not be checked (a dependency was away): the attempt takes nothing.

        An outage must not lock real users out once it is over; unlike ``succeeded`` the pair
        keeps its earlier failures. A store that is itself away keeps the slots (its 503 stands).
        """
        t = self._throttle
        with contextlib.suppress(UnavailableError):
            t.store.unreserve(self._keys, t.clock())

    def failed(self) -> Lockout | None:
        t = self._throttle
        count = t.store.settle(self._keys, t.policy, t.clock())
        if count is None:
            return None
        return Lockout(t.scope, self.account, count, t.policy.window)


@dataclass(eq=False, repr=False)
class FailureThrottle:
    store: FailureStore
    policy: FailurePolicy
    _: KW_ONLY
    scope: str
    clock: Clock = system_clock

    def keys(self, account: str, ip: str | None) -> Keys:
        address = address_key(ip)  # never contains "|": the pair key splits at its first one
        return Keys(
            ip=f"{self.scope}:ip:{address}",
            account=f"{self.scope}:acct:{account}",
            pair=f"{self.scope}:pair:{address}|{account}",
        )

    def begin(self, account: str, ip: str | None) -> Attempt:
        """Hold a slot of every budget for one check; ``ThrottledError`` if one is spent."""
        keys = self.keys(account, ip)
        refusal = self.store.reserve(keys, self.policy, self.clock())
        if refusal is not None:
            raise ThrottledError(
                refusal.budget, max(1, math.ceil(refusal.wait - _EPSILON)), "too many failed logins"
            )
        return Attempt(self, keys, account)


# -- memory --------------------------------------------------------------------------------------
@dataclass(slots=True)
class _Window:
    count: int
    reset_at: float
    alerted: bool = False


@dataclass(slots=True)
class _Pair:
    count: int
    until: float  # locked before this instant
    expires: float  # forgotten from this instant


class MemoryFailureStore:
    def __init__(self) -> None:
        self._windows: dict[str, _Window] = {}
        self._pairs: dict[str, _Pair] = {}
        self._lock = threading.Lock()
        self._ops = 0

    def _window(self, key: str, now: float) -> _Window | None:
        entry = self._windows.get(key)
        return entry if entry is not None and entry.reset_at > now else None

    def _windows_back(self, keys: Keys, now: float) -> None:
        """The slot each live window (ip, account) holds, back (the lock is held)."""
        for key in (keys.ip, keys.account):
            entry = self._window(key, now)
            if entry is not None and entry.count > 0:
                entry.count -= 1

    def _pair(self, key: str, now: float) -> _Pair | None:
        entry = self._pairs.get(key)
        return entry if entry is not None and entry.expires > now else None

    def reserve(self, keys: Keys, policy: FailurePolicy, now: float) -> Refusal | None:
        with self._lock:
            ip = self._window(keys.ip, now) or _Window(0, now + policy.window)
            account = self._window(keys.account, now) or _Window(0, now + policy.window)
            pair = self._pair(keys.pair, now) or _Pair(0, 0.0, 0.0)
            refusals = []
            if ip.count >= policy.per_ip:
                refusals.append(Refusal("ip", ip.reset_at - now))
            if account.count >= policy.per_account:
                refusals.append(Refusal("account", account.reset_at - now))
            if pair.until > now:
                refusals.append(Refusal("pair", pair.until - now))
            if refusals:
                return max(refusals, key=lambda r: r.wait)
            ip.count += 1
            account.count += 1
            pair.count += 1
            pair.until = max(pair.until, now + policy.delay(pair.count))
            pair.expires = max(pair.until, now) + policy.window
            self._windows[keys.ip] = ip
            self._windows[keys.account] = account
            self._pairs[keys.pair] = pair
            self._ops += 1
            if self._ops % 4096 == 0:
                self._sweep(now)
        return None

    def release(self, keys: Keys, now: float) -> None:
        with self._lock:
            self._windows_back(keys, now)
            self._pairs.pop(keys.pair, None)

    def unreserve(self, keys: Keys, now: float) -> None:
        with self._lock:
            self._windows_back(keys, now)
            pair = self._pair(keys.pair, now)
            if pair is not None and pair.count > 0:
                pair.count -= 1

    def settle(self, keys: Keys, policy: FailurePolicy, now: float) -> int | None:
        with self._lock:
            pair = self._pair(keys.pair, now)
            if pair is not None and pair.count >= policy.per_pair:
                pair.until = max(pair.until, now + policy.delay(pair.count))
                pair.expires = max(pair.until, now) + policy.window
            account = self._window(keys.account, now)
            if account is None or account.count < policy.per_account or account.alerted:
                return None
            account.alerted = True
            return account.count

    def _sweep(self, now: float) -> None:
        for key in [k for k, w in self._windows.items() if w.reset_at <= now]:
            del self._windows[key]
        for key in [k for k, p in self._pairs.items() if p.expires <= now]:
            del self._pairs[key]


# -- Redis ---------------------------------------------------------------------------------------
# Keys are ``<prefix>:{lf}:<scope>:ip|acct|pair:...``: one hash tag, one Cluster slot (see below).
# Windows are hashes {n, reset, alerted}; pairs are hashes {n, until, expires}. Every timestamp is
# the caller's clock (ARGV[1]); a record whose timestamps have passed counts as empty, whatever
# its TTL, which only frees the memory. Numbers come back as strings: Redis truncates Lua floats.
_COMMON = """
local now = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local function delay(n, per_pair, base, cap)
  if n < per_pair then return 0 end
  return math.min(cap, base * 2 ^ math.min(n - per_pair, 60))
end
local function ttl_ms(at)
  return math.max(1, math.ceil((at - now) * 1000))
end
"""

# KEYS: ip, account, pair. ARGV: now, window, per_ip, per_account, per_pair, base, cap.
# Returns {budget, wait}: budget '' when every slot was taken.
_RESERVE = (
    _COMMON
    + """
local per_ip, per_account = tonumber(ARGV[3]), tonumber(ARGV[4])
local per_pair, base, cap = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local function counter(key)
  local v = redis.call('HMGET', key, 'n', 'reset')
  local reset = tonumber(v[2])
  if reset == nil or reset <= now then return 0, now + window, true end
  return tonumber(v[1]) or 0, reset, false
end
local ip_n, ip_reset, ip_new = counter(KEYS[1])
local ac_n, ac_reset, ac_new = counter(KEYS[2])
local p = redis.call('HMGET', KEYS[3], 'n', 'until', 'expires')
local p_n, p_until = 0, 0
local p_expires = tonumber(p[3])
if p_expires ~= nil and p_expires > now then
  p_n, p_until = tonumber(p[1]) or 0, tonumber(p[2]) or 0
end
local budget, wait = '', 0
if ip_n >= per_ip then budget, wait = 'ip', ip_reset - now end
if ac_n >= per_account and ac_reset - now > wait then budget, wait = 'account', ac_reset - now end
if p_until > now and p_until - now > wait then budget, wait = 'pair', p_until - now end
if budget ~= '' then return {budget, tostring(wait)} end
local function bump(key, n, reset, new)
  if new then redis.call('DEL', key) end
  redis.call('HSET', key, 'n', n + 1, 'reset', reset)
  redis.call('PEXPIRE', key, ttl_ms(reset))
end
bump(KEYS[1], ip_n, ip_reset, ip_new)
bump(KEYS[2], ac_n, ac_reset, ac_new)
p_n = p_n + 1
p_until = math.max(p_until, now + delay(p_n, per_pair, base, cap))
p_expires = math.max(p_until, now) + window
redis.call('HSET', KEYS[3], 'n', p_n, 'until', p_until, 'expires', p_expires)
redis.call('PEXPIRE', KEYS[3], ttl_ms(p_expires))
return {'', '0'}
"""
)

# KEYS: ip, account, pair. ARGV: now. The slot each live window (ip, account) holds, back.
_WINDOWS_BACK = """
local now = tonumber(ARGV[1])
for i = 1, 2 do
  local v = redis.call('HMGET', KEYS[i], 'n', 'reset')
  local reset = tonumber(v[2])
  if reset ~= nil and reset > now and (tonumber(v[1]) or 0) > 0 then
    redis.call('HINCRBY', KEYS[i], 'n', -1)
  end
end"""

# KEYS: ip, account, pair. ARGV: now.
_RELEASE = (
    _WINDOWS_BACK
    + """
redis.call('DEL', KEYS[3])
return 0
"""
)

# KEYS: ip, account, pair. ARGV: now. An attempt that checked nothing: its three slots back.
_UNRESERVE = (
    _WINDOWS_BACK
    + """
local p = redis.call('HMGET', KEYS[3], 'n', 'expires')
local expires = tonumber(p[2])
if expires ~= nil and expires > now and (tonumber(p[1]) or 0) > 0 then
  redis.call('HINCRBY', KEYS[3], 'n', -1)
end
return 0
"""
)

# KEYS: account, pair. ARGV: now, window, per_account, per_pair, base, cap.
# Returns the account's count when this failure is the first to find it at its ceiling, else -1.
_SETTLE = (
    _COMMON
    + """
local per_account, per_pair = tonumber(ARGV[3]), tonumber(ARGV[4])
local base, cap = tonumber(ARGV[5]), tonumber(ARGV[6])
local p = redis.call('HMGET', KEYS[2], 'n', 'until', 'expires')
local p_expires = tonumber(p[3])
if p_expires ~= nil and p_expires > now then
  local p_n = tonumber(p[1]) or 0
  if p_n >= per_pair then
    local p_until = math.max(tonumber(p[2]) or 0, now + delay(p_n, per_pair, base, cap))
    p_expires = math.max(p_until, now) + window
    redis.call('HSET', KEYS[2], 'until', p_until, 'expires', p_expires)
    redis.call('PEXPIRE', KEYS[2], ttl_ms(p_expires))
  end
end
local v = redis.call('HMGET', KEYS[1], 'n', 'reset', 'alerted')
local reset, n = tonumber(v[2]), tonumber(v[1]) or 0
if reset ~= nil and reset > now and n >= per_account and v[3] ~= '1' then
  redis.call('HSET', KEYS[1], 'alerted', 1)
  return n
end
return -1
"""
)


class RedisFailureStore:
    def __init__(self, client: redis.Redis, prefix: str) -> None:
        # One Lua call touches an ip, an account and a pair counter, and an ip's counter is shared
        # by every account (and an account's by every address): on Redis Cluster they can only
        # share a slot if every failure counter does. The hash tag ``{lf}`` comes before any
        # account name, so a name with braces in it cannot move its keys to a slot of its own.
        self._prefix = f"{prefix}:{{lf}}:"
        self._reserve = client.register_script(_RESERVE)
        self._release = client.register_script(_RELEASE)
        self._settle = client.register_script(_SETTLE)
        self._unreserve = client.register_script(_UNRESERVE)

    def _keys(self, keys: Keys) -> list[str]:
        return [self._prefix + keys.ip, self._prefix + keys.account, self._prefix + keys.pair]

    def reserve(self, keys: Keys, policy: FailurePolicy, now: float) -> Refusal | None:
        args: list[str | int | float] = [repr(now), policy.window, policy.per_ip]
        args += [policy.per_account, policy.per_pair, policy.backoff_base, policy.backoff_max]
        with redis_unavailable():
            budget, wait = self._reserve(keys=self._keys(keys), args=args)
        name = budget.decode() if isinstance(budget, bytes) else str(budget)
        if not name:
            return None
        return Refusal(_BUDGETS[name], float(wait))

    def release(self, keys: Keys, now: float) -> None:
        with redis_unavailable():
            self._release(keys=self._keys(keys), args=[repr(now)])

    def unreserve(self, keys: Keys, now: float) -> None:
        with redis_unavailable():
            self._unreserve(keys=self._keys(keys), args=[repr(now)])

    def settle(self, keys: Keys, policy: FailurePolicy, now: float) -> int | None:
        args: list[str | int | float] = [repr(now), policy.window, policy.per_account]
        args += [policy.per_pair, policy.backoff_base, policy.backoff_max]
        with redis_unavailable():
            count = self._settle(keys=self._keys(keys)[1:], args=args)
        return int(count) if int(count) >= 0 else None
