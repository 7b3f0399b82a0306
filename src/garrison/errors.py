"""The root of every error Garrison raises on purpose.

    GarrisonError                 (code, status, title; carried to the client as problem+json)
    ├── ConfigError               settings that cannot be used; lists every offending setting
    ├── AuthenticationError       401: no, bad, expired or revoked credentials
    │   └── RefreshReuseError     401: a refresh token used twice; its family is now revoked
    ├── ForbiddenError            403: authenticated but denied; carries the reasons
    ├── NotFoundError             404
    ├── ConflictError             409
    ├── BadRequestError           400: unreadable input (not JSON, credentials in the query)
    ├── ValidationError           422: input that does not fit the contract
    ├── PayloadTooLargeError      413
    ├── RateLimitedError          429: carries retry_after (seconds)
    │   └── ThrottledError        429: a failure budget (pair, account, ip) is spent
    ├── UnavailableError          503 + Retry-After: a dependency is down (fails closed)
    ├── UpstreamError             502: the proxy's upstream failed
    └── UpstreamTimeout           504: the proxy's upstream did not answer in time

Domain packages raise these; only ``garrison.gateway`` turns them into HTTP.
"""

from __future__ import annotations

from collections.abc import Sequence


class GarrisonError(Exception):
    """Base error. ``code`` is stable and machine-readable; ``detail`` is safe to show."""

    status: int = 500
    code: str = "internal"
    title: str = "Internal error"

    def __init__(
        self, detail: str | None = None, *, reasons: Sequence[str] = (), code: str | None = None
    ) -> None:
        self.detail = detail or self.title
        self.reasons: tuple[str, ...] = tuple(reasons)
        if code is not None:
            self.code = code
        super().__init__(self.detail)


class ConfigError(GarrisonError):
    status = 500
    code = "config"
    title = "Invalid configuration"

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = tuple(problems)
        super().__init__("; ".join(self.problems), reasons=self.problems)


class AuthenticationError(GarrisonError):
    status = 401
    code = "unauthenticated"
    title = "Authentication required"

    def __init__(
        self,
        detail: str | None = None,
        *,
        reasons: Sequence[str] = (),
        code: str | None = None,
        subject: str | None = None,
    ) -> None:
        #: whose credential was refused, when that is known (audited; never shown to the client)
        self.subject = subject
        super().__init__(detail, reasons=reasons, code=code)


class RefreshReuseError(AuthenticationError):
    code = "refresh_reuse"


class ForbiddenError(GarrisonError):
    status = 403
    code = "forbidden"
    title = "Forbidden"


class NotFoundError(GarrisonError):
    status = 404
    code = "not_found"
    title = "Not found"


class ConflictError(GarrisonError):
    status = 409
    code = "conflict"
    title = "Conflict"


class BadRequestError(GarrisonError):
    status = 400
    code = "bad_request"
    title = "Bad request"


class ValidationError(GarrisonError):
    status = 422
    code = "invalid"
    title = "Invalid request"


class PayloadTooLargeError(GarrisonError):
    status = 413
    code = "too_large"
    title = "Payload too large"


class RateLimitedError(GarrisonError):
    status = 429
    code = "rate_limited"
    title = "Too many requests"

    def __init__(self, retry_after: int, detail: str | None = None) -> None:
        self.retry_after = max(1, int(retry_after))
        super().__init__(detail or f"Retry after {self.retry_after} s")


class ThrottledError(RateLimitedError):
    """Too many failures: ``budget`` names the one spent (for the audit; the answer is the same)."""

    def __init__(self, budget: str, retry_after: int, detail: str | None = None) -> None:
        self.budget = budget
        super().__init__(retry_after, detail)


class UnavailableError(GarrisonError):
    """503 with ``Retry-After``: ``dependency`` (``database``, ``redis``, ``idp`` ...) is away."""

    status = 503
    code = "unavailable"
    title = "Service unavailable"

    def __init__(
        self,
        detail: str | None = None,
        *,
        dependency: str = "dependency",
        retry_after: int | None = 1,
        reasons: Sequence[str] = (),
        code: str | None = None,
    ) -> None:
        self.dependency = dependency
        #: seconds after which trying again makes sense (always sent as ``Retry-After``)
        self.retry_after = max(1, int(retry_after or 1))
        super().__init__(detail, reasons=reasons, code=code)


class UpstreamError(GarrisonError):
    """502: the built-in proxy's upstream could not be reached or answered badly."""

    status = 502
    code = "bad_gateway"
    title = "Bad gateway"


class UpstreamTimeout(GarrisonError):
    """504: the built-in proxy's upstream did not answer in time."""

    status = 504
    code = "gateway_timeout"
    title = "Gateway timeout"
