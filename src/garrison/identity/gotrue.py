"""Refresh tokens of a self-hosted Supabase GoTrue, exchanged through ``POST /auth/refresh`` (seed
001; A10, A5).

With Supabase tokens enabled (``SUPABASE_JWT_SECRET``), ``SUPABASE_GOTRUE_URL`` names the project's
own GoTrue. A refresh token that is not Garrison's (``grt_``) is then sent to GoTrue's refresh grant,
as supabase/auth implements it: ``POST {url}/token?grant_type=refresh_token`` with the JSON body
``{"refresh_token": ...}`` and, when ``SUPABASE_ANON_KEY`` is set, the ``apikey`` header. GoTrue
rotates the token (and revokes the family on reuse); Garrison passes on its ``access_token``,
``refresh_token``, ``expires_in`` and ``token_type``, and nothing else (not the ``user`` object).

The exchange fails closed and never as a 500:

- GoTrue refuses the token (a 4xx: ``invalid_grant`` for an unknown, used or revoked token) -> 401,
  with GoTrue's error code as the reason (never its free text);
- GoTrue is down, slow (``SUPABASE_GOTRUE_TIMEOUT``, connect and read), busy (409, 429), failing
  (5xx), answers a redirect (never followed: the refresh token would travel on to wherever it
  points) or answers something that is not a token response -> 503 with ``Retry-After``;
- the access token GoTrue issued must be one Garrison itself accepts as a Supabase token (the
  caller's ``check``: signature, issuer, audience, and the local user still active); a token signed
  with another secret is not handed out (503: the settings disagree), and a disabled user's is 401.

The outbound client trusts no proxy or ``.netrc`` from the environment and reads at most
``MAX_RESPONSE_BYTES`` of an answer.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx

from garrison.errors import AuthenticationError, ConfigError, UnavailableError
from garrison.plain import fields_dict
from garrison.principal import Principal
from garrison.tokens.jws import TokenError

TOKEN_PATH = "/token"  # noqa: S105 - a URL path, not a secret
MAX_RESPONSE_BYTES = 256 * 1024
RETRY_AFTER = 5  # seconds, when GoTrue does not say
_MAX_RETRY_AFTER = 300
_ERROR_CODE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")
_HOSTED = (".supabase.co", ".supabase.com", ".supabase.in", ".supabase.net")
#: the longest a GoTrue token may be here (a JWT of a few KB; refresh tokens are short)
_MAX_TOKEN = 16 * 1024

Check = Callable[[str], Principal]


@dataclass(frozen=True, slots=True)
class GoTrueTokens:
    """GoTrue's answer to a refresh, as Garrison passes it on; ``principal``: who it is for."""

    access_token: str
    token_type: str
    expires_in: int
    refresh_token: str
    principal: Principal

    def body(self) -> dict[str, Any]:
        return fields_dict(self, without=("principal",))


class GoTrueRefresh:
    """The refresh grant of one GoTrue. ``check`` authenticates an access token as Garrison's
    ``/verify`` would (``Authenticator.authenticate``); it raises for a token it refuses."""

    def __init__(
        self,
        url: str,
        check: Check,
        *,
        anon_key: str | None = None,
        timeout: float = 5.0,
        http: httpx.Client | None = None,
    ) -> None:
        self.endpoint = url.rstrip("/") + TOKEN_PATH
        self.check = check
        self.anon_key = anon_key
        self.http = http or httpx.Client(
            timeout=httpx.Timeout(timeout),
            follow_redirects=False,
            trust_env=False,  # no proxy or .netrc credentials from the environment
            limits=httpx.Limits(max_connections=50, max_keepalive_connections=10),
        )

    def close(self) -> None:
        self.http.close()

    def refresh(self, refresh_token: str) -> GoTrueTokens:
        """Exchange ``refresh_token`` at GoTrue. Blocking: run it in a worker thread."""
        status, headers, raw = self._post(refresh_token)
        if status == 200:
            tokens = _tokens(raw)
            return self._checked(*tokens)
        if status in (409, 429) or status >= 500:
            raise UnavailableError(
                f"GoTrue answered {status}; try again later",
                code="gotrue_unavailable",
                retry_after=_retry_after(headers.get("retry-after")),
            )
        if 400 <= status < 500:
            error = _error_code(raw)
            raise AuthenticationError(
                "invalid refresh token",
                code="invalid_refresh_token",
                reasons=[f"gotrue: {error}"] if error else (),
            )
        raise UnavailableError(  # a redirect (not followed), or a status GoTrue does not send
            f"GoTrue answered {status} (redirects are not followed; check SUPABASE_GOTRUE_URL)",
            code="gotrue_unavailable",
            retry_after=RETRY_AFTER,
        )

    def _post(self, refresh_token: str) -> tuple[int, httpx.Headers, bytes]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.anon_key:
            headers["apikey"] = self.anon_key
        body = json.dumps({"refresh_token": refresh_token}, separators=(",", ":")).encode()
        try:
            with self.http.stream(
                "POST",
                self.endpoint,
                params={"grant_type": "refresh_token"},
                content=body,
                headers=headers,
            ) as response:
                raw = bytearray()
                for chunk in response.iter_bytes():
                    raw += chunk
                    if len(raw) > MAX_RESPONSE_BYTES:
                        raise _unavailable("GoTrue's answer is too large")
                return response.status_code, response.headers, bytes(raw)
        except httpx.TimeoutException:
            raise UnavailableError(
                "GoTrue did not answer in time (SUPABASE_GOTRUE_TIMEOUT)",
                code="gotrue_unavailable",
                retry_after=RETRY_AFTER,
            ) from None
        except httpx.HTTPError as exc:
            raise UnavailableError(
                f"GoTrue unreachable: {type(exc).__name__}",
                code="gotrue_unavailable",
                retry_after=RETRY_AFTER,
            ) from None

    def _checked(
        self, access_token: str, token_type: str, expires_in: int, refresh_token: str
    ) -> GoTrueTokens:
        try:
            principal = self.check(access_token)
        except TokenError:
            raise UnavailableError(
                "GoTrue issued an access token Garrison does not accept: SUPABASE_JWT_SECRET, "
                "SUPABASE_JWT_ISSUER (or SUPABASE_URL) and SUPABASE_JWT_AUD must match GoTrue's",
                code="gotrue_mismatch",
                retry_after=RETRY_AFTER,
            ) from None
        except AuthenticationError as exc:  # the local user is disabled, deleted or revoked
            raise AuthenticationError(
                "session ended", code="invalid_refresh_token", subject=exc.subject
            ) from None
        if principal.via != "external":
            raise UnavailableError(
                "GoTrue issued a token that is not a Supabase token",
                code="gotrue_mismatch",
                retry_after=RETRY_AFTER,
            )
        return GoTrueTokens(access_token, token_type, expires_in, refresh_token, principal)


def _tokens(raw: bytes) -> tuple[str, str, int, str]:
    """The four fields of a token response; 503 for anything that is not one."""
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        data = None
    if isinstance(data, dict):
        access, kind = data.get("access_token"), data.get("token_type")
        expires, refresh = data.get("expires_in"), data.get("refresh_token")
        if (
            _token_text(access)
            and _token_text(refresh)
            and isinstance(kind, str)
            and kind.lower() == "bearer"
            and isinstance(expires, int)
            and not isinstance(expires, bool)
            and 0 < expires <= 366 * 86400
        ):
            return access, kind, expires, refresh  # type: ignore[return-value]
    raise UnavailableError(
        "GoTrue's answer is not a token response (check SUPABASE_GOTRUE_URL)",
        code="gotrue_unavailable",
        retry_after=RETRY_AFTER,
    )


def _unavailable(detail: str) -> UnavailableError:
    return UnavailableError(detail, code="gotrue_unavailable", retry_after=RETRY_AFTER)


def _token_text(value: object) -> bool:
    return isinstance(value, str) and 0 < len(value) <= _MAX_TOKEN and value.isprintable()


def _error_code(raw: bytes) -> str | None:
    """GoTrue's machine-readable error: ``error`` (OAuth form), ``error_code``, or ``code`` (the
    2024-01-01 API form); only a plain identifier, never free text from the upstream."""
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    if not isinstance(data, dict):
        return None
    for name in ("error", "error_code", "code"):
        value = data.get(name)
        if isinstance(value, str) and _ERROR_CODE.fullmatch(value):
            return value
    return None


def _retry_after(value: str | None) -> int:
    if value is not None and value.strip().isdigit():
        return min(max(1, int(value.strip())), _MAX_RETRY_AFTER)
    return RETRY_AFTER


# -- configuration ----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class GoTrueConfig:
    """``SUPABASE_GOTRUE_URL`` and what goes with it, built once by the composition root."""

    url: str  # "" when unset
    jwt_secret_set: bool  # SUPABASE_JWT_SECRET is configured (GoTrue's tokens can be checked)
    production: bool
    anon_key: str | None = field(default=None, repr=False)
    timeout: float = 5.0


def gotrue_url_problems(config: GoTrueConfig) -> list[str]:
    """What is wrong with ``SUPABASE_GOTRUE_URL`` (empty: nothing, or it is unset)."""
    url = config.url.strip()
    if not url:
        return []
    name = "SUPABASE_GOTRUE_URL"
    problems = []
    if not config.jwt_secret_set:
        problems.append(
            f"{name}: set SUPABASE_JWT_SECRET too (GoTrue's tokens must be checked here)"
        )
    parts = urlsplit(url)
    try:
        host = parts.hostname or ""
        parts.port  # noqa: B018 - raises for a port that is not a number
    except ValueError:
        return [*problems, f"{name}: not a URL"]
    if parts.scheme not in ("http", "https") or not host:
        problems.append(f"{name}: an http(s) URL of your GoTrue, e.g. https://auth.internal:9999")
    elif parts.username is not None or parts.password is not None:
        problems.append(f"{name}: no credentials in the URL (SUPABASE_ANON_KEY is the apikey)")
    elif parts.query or parts.fragment:
        problems.append(f"{name}: no query or fragment")
    elif config.production:
        if parts.scheme != "https" and not _loopback(host):
            problems.append(f"{name}: https in production (refresh tokens must not travel clear)")
        if host.lower().endswith(_HOSTED):
            problems.append(
                f"{name}: a hosted Supabase instance; point it at your self-hosted GoTrue"
            )
    return problems


def _loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def build_gotrue_refresh(config: GoTrueConfig, check: Check) -> GoTrueRefresh | None:
    """The GoTrue refresh grant of ``SUPABASE_GOTRUE_URL``; None when unset."""
    problems = gotrue_url_problems(config)
    if problems:
        raise ConfigError(problems)
    if not config.url.strip():
        return None
    return GoTrueRefresh(
        config.url.strip(), check, anon_key=config.anon_key, timeout=config.timeout
    )
