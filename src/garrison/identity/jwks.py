"""A provider's JWKS, fetched over HTTP and cached (A10, A11).

Keys are fetched on first use and kept ``ttl`` seconds. A token naming an unknown ``kid`` (the
provider rotated) triggers a refetch, but at most once every ``min_refetch`` seconds, so a flood of
tokens with made-up ``kid`` values cannot turn Garrison into a traffic amplifier against the
provider. A failed fetch keeps the last good keys; only asymmetric signing keys are ever taken
from a JWKS (``keys.jwk.jwks_keys``), so a symmetric ``oct`` key in a JWKS is ignored.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import KW_ONLY, dataclass, field
from typing import Any

import httpx

from garrison.clock import Clock, system_clock
from garrison.errors import UnavailableError
from garrison.keys.algorithms import Verifier
from garrison.keys.jwk import KeyEntry, jwks_keys

log = logging.getLogger("garrison.jwks")

MAX_JWKS_BYTES = 256 * 1024
FETCH_TIMEOUT = 5.0


def fetch_json(http: httpx.Client, url: str, *, max_bytes: int = MAX_JWKS_BYTES) -> Any:
    """GET a JSON document; ``UnavailableError`` for any failure (never a stack trace)."""
    try:
        response = http.get(url, timeout=FETCH_TIMEOUT, follow_redirects=False)
    except httpx.HTTPError as exc:
        raise UnavailableError(
            f"cannot fetch {url}: {type(exc).__name__}", dependency="idp"
        ) from None
    if response.status_code != 200 or len(response.content) > max_bytes:
        raise UnavailableError(f"cannot fetch {url}: HTTP {response.status_code}", dependency="idp")
    try:
        return response.json()
    except ValueError:
        raise UnavailableError(f"cannot fetch {url}: not JSON", dependency="idp") from None


@dataclass(eq=False, repr=False)
class RemoteJwks:
    url: str
    http: httpx.Client
    _: KW_ONLY
    ttl: float = 3600
    min_refetch: float = 30
    clock: Clock = system_clock
    _keys: dict[str, KeyEntry] = field(default_factory=dict, init=False)
    _unnamed: list[KeyEntry] = field(default_factory=list, init=False)
    _fetched_at: float | None = field(default=None, init=False)
    _attempted_at: float = field(default=float("-inf"), init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    def key(self, kid: str | None, alg: str) -> KeyEntry | None:
        """The key ``kid`` names, whatever its algorithm (the decoder compares it with the
        token's); a key without a ``kid`` only when it is the only key of ``alg``. An unknown
        ``kid`` refetches the JWKS, at most once every ``min_refetch`` seconds."""
        now = self.clock()
        if self._fetched_at is None or now >= self._fetched_at + self.ttl:
            self._refresh(now)
        entry = self._find(kid, alg)
        if entry is None and self._refresh(now):
            entry = self._find(kid, alg)
        return entry

    def lookup(self, kid: str | None, alg: str) -> Verifier | None:
        """The verifier of key ``kid`` if that key is one of ``alg``."""
        entry = self.key(kid, alg)
        return entry[1] if entry is not None and entry[0] == alg else None

    def _find(self, kid: str | None, alg: str) -> KeyEntry | None:
        if kid is None:
            matching = [e for e in (*self._keys.values(), *self._unnamed) if e[0] == alg]
            return matching[0] if len(matching) == 1 else None
        return self._keys.get(kid)

    def _refresh(self, now: float) -> bool:
        """Fetch again unless a fetch was tried in the last ``min_refetch`` seconds."""
        with self._lock:
            if now - self._attempted_at < self.min_refetch:
                return False
            self._attempted_at = now
            try:
                document = fetch_json(self.http, self.url)
            except UnavailableError as exc:
                log.warning("JWKS fetch failed: %s", exc.detail)
                return False
            self._keys, self._unnamed = jwks_keys(document)
            self._fetched_at = now
            return True
