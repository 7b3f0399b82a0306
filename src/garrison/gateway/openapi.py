"""The OpenAPI 3.1 description of every endpoint Garrison serves (U2): ``GET /openapi.json``.

Each operation is described once, in ``OPERATIONS``, keyed by method and path template as the
Starlette routes (and the framework-free ``/verify``) declare them; ``tests/unit/gateway/
test_openapi.py`` fails for a route without an entry here, or an entry without a route. Request
bodies are the route modules' own pydantic models (``model_json_schema``: what the server validates
is what the description says); response bodies are the models below. Every error is RFC 9457
``application/problem+json`` (``type``, ``title``, ``status``, ``detail`` and, for denies,
``reasons``), listed per operation for each status the route can answer.

Some answers come from the layers around every route rather than from the route itself
(``gateway.stack``): a credential in the query string (400 next to an ``Authorization`` header,
401 alone), a malformed ``Content-Length`` (400), a body over the size cap (413), the per-IP rate
limits (429 with ``Retry-After``, every route but the health probes) and an unreachable rate
limiter (503).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import models_json_schema

from garrison.gateway.routes import admin, auth, decide, self_service, vault

#: The framework-free routes (``Front.fast_routes``): not in the Starlette table.
FAST_ROUTES = ("/verify",)
#: Browser pages, not API: the console (``/`` redirects there) is HTML for people, described by
#: its own pages; everything else Garrison serves is in this description.
BROWSER_PAGES = ("/console",)


def is_browser_page(path: str) -> bool:
    return path == "/" or any(path == p or path.startswith(p + "/") for p in BROWSER_PAGES)


PROBLEM = "application/problem+json"
_REF = "#/components/schemas/{model}"


# -- response bodies -----------------------------------------------------------------------------
class _Out(BaseModel):
    model_config = ConfigDict(extra="allow")


class Health(_Out):
    status: Literal["ok"]


class Readiness(_Out):
    status: Literal["ok", "unavailable"]
    checks: dict[str, Literal["ok", "disabled", "unavailable"]]


class Jwk(_Out):
    kid: str
    kty: str
    alg: str
    use: Literal["sig"]


class Jwks(_Out):
    keys: list[Jwk]


class OpenIdConfiguration(_Out):
    issuer: str
    jwks_uri: str
    token_endpoint: str
    id_token_signing_alg_values_supported: list[str]


class TokenPair(_Out):
    access_token: str
    token_type: Literal["Bearer"]
    expires_in: int
    refresh_token: str


class CookieSession(_Out):
    """A browser login (``"session": "cookie"``): the tokens are in ``HttpOnly`` cookies only."""

    session: Literal["cookie"]
    token_type: Literal["cookie"]
    expires_in: int


class MfaPending(_Out):
    """The password step of a user with a second factor: no tokens yet (A14)."""

    mfa_required: Literal[True]
    mfa_token: str
    expires_in: int


class MfaEnrolment(_Out):
    secret: str
    otpauth_uri: str


class RecoveryCodes(_Out):
    recovery_codes: list[str]


class SessionOut(_Out):
    id: str
    created_at: float
    last_used_at: float | None
    ip: str | None
    user_agent: str | None
    amr: list[str]
    current: bool


class SessionList(_Out):
    sessions: list[SessionOut]


class TemporaryPassword(_Out):
    temporary_password: str = Field(description="Shown once; must be changed at first login.")


class Me(_Out):
    sub: str
    username: str
    email: str | None
    roles: list[str]
    tenant: str | None


class UserOut(_Out):
    id: str
    username: str
    email: str | None
    roles: list[str]
    tenant: str | None
    active: bool
    created_at: float


class UserList(_Out):
    users: list[UserOut]


class RevokedSessions(_Out):
    user_id: str
    revoked_sessions: int
    revoked_api_keys: int


class UserExport(_Out):
    """Everything Garrison holds about one user (V4)."""

    sessions: list[dict[str, Any]]
    api_keys: list[dict[str, Any]]
    vault_secrets_created: list[dict[str, Any]]
    audit_records: list[dict[str, Any]]


class ApiKeyOut(_Out):
    id: str
    user_id: str
    name: str
    scopes: list[str]
    tenant: str | None
    created_at: float
    expires_at: float | None
    revoked_at: float | None
    rotate_by: float


class NewApiKey(ApiKeyOut):
    key: str = Field(description="The secret, shown this once: store it now.")


class ApiKeyList(_Out):
    api_keys: list[ApiKeyOut]


class KeyRotation(_Out):
    kid: str
    emergency: bool
    keys: list[dict[str, Any]]


class AuditRecords(_Out):
    records: list[dict[str, Any]]
    count: int


class ChainReport(_Out):
    ok: bool
    checked: int
    head_seq: int
    head_hash: str
    root_seq: int
    first_bad_seq: int | None
    problem: str | None


class Decision(_Out):
    allow: bool
    reasons: list[str]
    policy_version: str


class SecretInfo(_Out):
    name: str
    tenant: str | None
    key_version: int
    created_at: float
    updated_at: float
    created_by: str | None


class SecretValue(SecretInfo):
    value: str


class Problem(BaseModel):
    """RFC 9457 problem details: the only shape an error takes (E7)."""

    model_config = ConfigDict(extra="allow", title="Problem")

    type: str = Field(description="A URI naming the kind of problem.")
    title: str
    status: int = Field(ge=400, le=599)
    detail: str
    reasons: list[str] = Field(
        default_factory=list, description="Every reason of a deny (always present on a 403)."
    )


_MODELS: tuple[type[BaseModel], ...] = (
    Health,
    Readiness,
    Jwks,
    OpenIdConfiguration,
    TokenPair,
    CookieSession,
    MfaPending,
    MfaEnrolment,
    RecoveryCodes,
    SessionOut,
    SessionList,
    TemporaryPassword,
    Me,
    UserList,
    UserOut,
    RevokedSessions,
    UserExport,
    ApiKeyList,
    NewApiKey,
    KeyRotation,
    AuditRecords,
    ChainReport,
    Decision,
    SecretInfo,
    SecretValue,
    Problem,
    auth.LoginBody,
    auth.RefreshBody,
    auth.LogoutBody,
    auth.MfaVerifyBody,
    auth.MfaCodeBody,
    auth.MfaRemoveBody,
    self_service.ChangePassword,
    admin.CreateUser,
    admin.PatchUser,
    admin.DeleteUser,
    admin.CreateApiKey,
    admin.RotateKeys,
    decide.DecideBody,
    vault.PutSecret,
)


# -- errors ---------------------------------------------------------------------------------------
_ERRORS: dict[int, str] = {
    400: "Unreadable request: not JSON, a wrong content type, a credential in the query string "
    "next to an Authorization header, a header sent twice with different values.",
    401: "No, bad, expired or revoked credentials (also: a credential in the query string).",
    403: "Authenticated but denied: every reason is in `reasons`, the first in "
    "`X-Auth-Deny-Reason`.",
    404: "No such record (or not in the caller's tenant), or no such path.",
    409: "Conflicts with the current state (a taken username, the last active platform admin).",
    413: "The request body is over the size cap (GARRISON_MAX_BODY_BYTES).",
    422: "Well-formed but does not fit the contract: each problem is one of `reasons`.",
    429: "A rate limit or failure throttle is spent: retry after `Retry-After` seconds.",
    503: "A dependency (the rate limiter, the login state store, a provider) is unavailable; "
    "the request fails closed.",
}
_ERROR_NAMES = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    409: "Conflict",
    413: "PayloadTooLarge",
    422: "Unprocessable",
    429: "TooManyRequests",
    503: "Unavailable",
}


def _error_response(status: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"$ref": _REF.format(model="Problem")}
    if status == 403:
        schema = {"allOf": [schema, {"required": ["reasons"]}]}
    response: dict[str, Any] = {
        "description": _ERRORS[status],
        "content": {PROBLEM: {"schema": schema}},
    }
    headers: dict[str, Any] = {}
    if status == 401:
        headers["WWW-Authenticate"] = {
            "description": '`Bearer realm="garrison"` and, when known, the error.',
            "schema": {"type": "string"},
        }
    if status == 403:
        headers["X-Auth-Deny-Reason"] = {
            "description": "The first reason of the deny.",
            "schema": {"type": "string"},
        }
    if status == 429:
        headers["Retry-After"] = {
            "description": "Seconds to wait before trying again.",
            "required": True,
            "schema": {"type": "integer", "minimum": 1},
        }
    if headers:
        response["headers"] = headers
    return response


# -- operations -----------------------------------------------------------------------------------
Auth = Literal["none", "bearer", "admin"]


@dataclass(frozen=True)
class Operation:
    summary: str
    tag: str
    responses: Mapping[int, dict[str, Any]]
    errors: tuple[int, ...]
    auth: Auth = "bearer"
    body: type[BaseModel] | None = None
    body_required: bool = True
    parameters: tuple[dict[str, Any], ...] = ()
    description: str = ""
    action: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


def _json(model: type[BaseModel], description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": _REF.format(model=model.__name__)}}},
    }


def _json_any_of(description: str, *models: type[BaseModel]) -> dict[str, Any]:
    refs = [{"$ref": _REF.format(model=m.__name__)} for m in models]
    return {
        "description": description,
        "content": {"application/json": {"schema": {"anyOf": refs}}},
    }


def _empty(description: str, **headers: dict[str, Any]) -> dict[str, Any]:
    response: dict[str, Any] = {"description": description}
    if headers:
        response["headers"] = headers
    return response


def _text(media_type: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {media_type: {"schema": {"type": "string"}}}}


def _path(name: str, description: str, pattern: str | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string", "minLength": 1}
    if pattern:
        schema["pattern"] = pattern
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": schema,
    }


def _query(name: str, description: str, **schema: Any) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": {"type": "string", **schema},
    }


def _header(name: str, description: str, *, required: bool = False) -> dict[str, Any]:
    return {
        "name": name,
        "in": "header",
        "required": required,
        "description": description,
        "schema": {"type": "string"},
    }


_TENANT = _header(
    "X-Tenant-ID",
    "The tenant to act in: a tenant-bound caller's own (another is refused with `tenant "
    "mismatch`); a platform admin may name any.",
)
_LOCATION = {"description": "Where the browser goes next.", "schema": {"type": "string"}}
_IDENTITY_HEADERS = {
    name: {"description": what, "schema": {"type": "string"}}
    for name, what in (
        ("X-Auth-User", "The username (empty for an anonymous request to a public route)."),
        ("X-Auth-Subject", "The subject (`sub`)."),
        ("X-Auth-Tenant", "The tenant the request acts in."),
        ("X-Auth-Roles", "The roles, comma-separated."),
    )
}

#: every route sits behind the edge layers: 400/401 for a credential in the query string, 429 and
#: 503 from the per-IP rate limits (the health probes are never limited)
_EDGE = (400, 401, 429, 503)
_BODY = (400, 401, 413, 422, 429, 503)
_ADMIN = (400, 401, 403, 404, 413, 422, 429, 503)
_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$"

OPERATIONS: dict[tuple[str, str], Operation] = {
    ("GET", "/healthz"): Operation(
        "Liveness: the process answers",
        "health",
        {200: _json(Health, 'Always `{"status": "ok"}`.')},
        (400, 401),
        auth="none",
        action="health.read",
    ),
    ("GET", "/readyz"): Operation(
        "Readiness: the database and Redis answer",
        "health",
        {
            200: _json(Readiness, "Ready."),
            503: _json(Readiness, "Not ready: the failing check is `unavailable`."),
        },
        (400, 401),
        auth="none",
        action="health.read",
    ),
    ("GET", "/.well-known/jwks.json"): Operation(
        "The public signing keys (current and previous)",
        "discovery",
        {200: _json(Jwks, "The JWK set.")},
        _EDGE,
        auth="none",
        action="health.read",
    ),
    ("GET", "/.well-known/openid-configuration"): Operation(
        "The OpenID configuration document",
        "discovery",
        {200: _json(OpenIdConfiguration, "Issuer, endpoints and supported algorithms.")},
        _EDGE,
        auth="none",
        action="health.read",
    ),
    ("GET", "/openapi.json"): Operation(
        "This description (OpenAPI 3.1)",
        "discovery",
        {200: {"description": "The description.", "content": {"application/json": {}}}},
        _EDGE,
        auth="none",
        action="health.read",
    ),
    ("GET", "/docs"): Operation(
        "This description as a web page",
        "discovery",
        {200: _text("text/html", "The API reference, rendered server-side.")},
        _EDGE,
        auth="none",
        action="health.read",
    ),
    ("GET", "/docs/docs.css"): Operation(
        "The reference page's style sheet",
        "discovery",
        {200: _text("text/css", "The style sheet.")},
        _EDGE,
        auth="none",
        action="health.read",
    ),
    ("POST", "/auth/login"): Operation(
        "Log in with a username and password",
        "auth",
        {
            200: _json_any_of(
                'The token pair; with `"session": "cookie"` the session cookies instead; for a '
                "user with a second factor, `mfa_required` and an `mfa_token` for "
                "`POST /auth/mfa/verify`.",
                TokenPair,
                CookieSession,
                MfaPending,
            )
        },
        (*_BODY, 403),
        auth="none",
        body=auth.LoginBody,
        description="Bad credentials get 401 with the same body whether the user exists or "
        "not; too many failures (per account, per address) get 429 with `Retry-After`. A cookie "
        "login from another site is refused (403).",
    ),
    ("POST", "/auth/refresh"): Operation(
        "Exchange a refresh token for a new pair",
        "auth",
        {200: _json_any_of("A new pair (or new session cookies).", TokenPair, CookieSession)},
        (*_BODY, 403),
        auth="none",
        body=auth.RefreshBody,
        description="A refresh token used twice gets 401 and revokes its whole family. A browser "
        "sends no body: its session cookies and the CSRF header are used instead.",
    ),
    ("POST", "/auth/logout"): Operation(
        "End the caller's session",
        "auth",
        {204: _empty("The session's refresh family is revoked.")},
        (*_BODY, 403),
        body=auth.LogoutBody,
        body_required=False,
        action="auth.self",
    ),
    ("POST", "/auth/mfa/verify"): Operation(
        "Complete a login with the second factor",
        "auth",
        {200: _json_any_of("The token pair of a normal login.", TokenPair, CookieSession)},
        (*_BODY, 403),
        auth="none",
        body=auth.MfaVerifyBody,
        description="`code` is a TOTP code or a recovery code; the `mfa_token` is single-use and "
        "short-lived. Wrong codes are throttled like passwords (429 with `Retry-After`).",
    ),
    ("POST", "/auth/mfa/totp"): Operation(
        "Start a TOTP enrolment",
        "auth",
        {200: _json(MfaEnrolment, "The secret and its otpauth URI (pending until confirmed).")},
        (*_EDGE, 403, 409),
        action="auth.mfa.enrol",
    ),
    ("POST", "/auth/mfa/totp/confirm"): Operation(
        "Confirm the enrolment with its first code",
        "auth",
        {200: _json(RecoveryCodes, "One-time recovery codes, shown once.")},
        (*_BODY, 403, 409),
        body=auth.MfaCodeBody,
        action="auth.mfa.confirm",
    ),
    ("DELETE", "/auth/mfa/totp"): Operation(
        "Remove the second factor",
        "auth",
        {204: _empty("The authenticator and its recovery codes are gone.")},
        (*_BODY, 403),
        body=auth.MfaRemoveBody,
        action="auth.mfa.remove",
        description="Needs a fresh re-authentication: the current password and a code.",
    ),
    ("POST", "/auth/password"): Operation(
        "Change the caller's password",
        "auth",
        {204: _empty("Changed; every other session of the user has ended.")},
        (*_BODY, 403),
        body=self_service.ChangePassword,
        action="auth.password",
        description="Needs the current password (a wrong one counts as a failed login). A weak, "
        "common or breached new password gets 422 with every reason.",
    ),
    ("GET", "/auth/sessions"): Operation(
        "The caller's live sessions",
        "auth",
        {200: _json(SessionList, "Each refresh family of the caller, the current one marked.")},
        (*_EDGE, 403),
        action="auth.sessions",
    ),
    ("DELETE", "/auth/sessions/{session_id}"): Operation(
        "End one of the caller's sessions",
        "auth",
        {204: _empty("The session and its access tokens have ended.")},
        (*_EDGE, 403, 404),
        parameters=(_path("session_id", "A session id from GET /auth/sessions."),),
        action="auth.sessions",
        description="Another user's session id, or an unknown one, answers 404.",
    ),
    ("GET", "/auth/me"): Operation(
        "The caller's identity",
        "auth",
        {200: _json(Me, "Who the credential belongs to.")},
        (*_EDGE, 403),
        parameters=(_TENANT,),
        action="auth.self",
    ),
    ("GET", "/auth/oidc/{provider}/login"): Operation(
        "Start a login at an OIDC provider",
        "auth",
        {302: _empty("To the provider's authorization endpoint.", Location=_LOCATION)},
        (*_EDGE, 404),
        auth="none",
        parameters=(
            _path("provider", "A provider of GARRISON_OIDC_PROVIDERS."),
            _query(
                "return_to",
                "A console path (`/console/...`, canonical, no query) the callback sends the "
                "browser to instead of the provider's `post_login_url`; anything else is a 400.",
                maxLength=512,
            ),
        ),
    ),
    ("GET", "/auth/oidc/{provider}/callback"): Operation(
        "Complete a login at an OIDC provider",
        "auth",
        {
            303: _empty(
                "To the login's `return_to`, else the provider's `post_login_url`, with the "
                "session cookies.",
                Location=_LOCATION,
            )
        },
        (*_EDGE, 404),
        auth="none",
        parameters=(
            _path("provider", "A provider of GARRISON_OIDC_PROVIDERS."),
            _query("code", "The authorization code."),
            _query("state", "The state sent with the login."),
            _query("error", "The provider's error, when it refused."),
        ),
    ),
    ("GET", "/verify"): Operation(
        "Forward auth for nginx, Traefik and Caddy",
        "forward auth",
        {200: _empty("Allowed; the identity headers are for the upstream.", **_IDENTITY_HEADERS)},
        (400, 401, 403, 429, 503),
        parameters=(
            _header("X-Forwarded-Method", "The original method (Traefik, Caddy)."),
            _header("X-Forwarded-Uri", "The original URI (Traefik, Caddy)."),
            _header("X-Original-Method", "The original method (nginx)."),
            _header("X-Original-URI", "The original URI (nginx)."),
            _TENANT,
        ),
        description="Any method is accepted. The original request comes from one header family "
        "(both present must agree); without it, or with an ambiguous path, the answer is 400. A "
        "CORS preflight is answered by the origin allow-list (200 or 403).",
    ),
    ("POST", "/v1/decide"): Operation(
        "A policy decision, with its reasons, for a backend",
        "policy",
        {200: _json(Decision, "The decision, allow or not.")},
        (*_BODY, 403),
        body=decide.DecideBody,
        parameters=(_TENANT,),
        action="policy.decide",
        description="Without `subject` the caller asks about itself; asking about another "
        "subject needs the admin or service role (`policy.decide.other`).",
    ),
    ("GET", "/admin/users"): Operation(
        "List users",
        "admin",
        {200: _json(UserList, "The users (a tenant admin sees its tenant's).")},
        (*_EDGE, 403),
        auth="admin",
        parameters=(_TENANT,),
        action="admin.users.list",
    ),
    ("POST", "/admin/users"): Operation(
        "Create a user",
        "admin",
        {201: _json(UserOut, "The new user.")},
        (*_ADMIN, 409),
        auth="admin",
        body=admin.CreateUser,
        parameters=(_TENANT,),
        action="admin.users.create",
    ),
    ("PATCH", "/admin/users/{user_id}"): Operation(
        "Disable, enable or change the roles of a user",
        "admin",
        {200: _json(UserOut, "The user as it is now.")},
        (*_ADMIN, 409),
        auth="admin",
        body=admin.PatchUser,
        parameters=(_path("user_id", "A user id or username."), _TENANT),
        action="admin.users.update",
        description="Unknown roles get 422; the last active platform admin cannot be disabled "
        "or demoted (409).",
    ),
    ("DELETE", "/admin/users/{user_id}"): Operation(
        "Delete a user and its data (V4)",
        "admin",
        {204: _empty("Deleted.")},
        (*_ADMIN, 409),
        auth="admin",
        body=admin.DeleteUser,
        body_required=False,
        parameters=(_path("user_id", "A user id or username."), _TENANT),
        action="admin.users.delete",
        description="The policy requires a `reason` (403 with `missing parameter: reason`).",
    ),
    ("GET", "/admin/users/{user_id}/export"): Operation(
        "Export everything held about a user (V4)",
        "admin",
        {200: _json(UserExport, "The user's data.")},
        (*_EDGE, 403, 404),
        auth="admin",
        parameters=(_path("user_id", "A user id or username."), _TENANT),
        action="admin.users.export",
    ),
    ("POST", "/admin/users/{user_id}/revoke-sessions"): Operation(
        "End every session and API key of a user",
        "admin",
        {200: _json(RevokedSessions, "What was revoked.")},
        (*_EDGE, 403, 404),
        auth="admin",
        parameters=(_path("user_id", "A user id or username."), _TENANT),
        action="admin.users.revoke_sessions",
    ),
    ("POST", "/admin/users/{user_id}/reset-password"): Operation(
        "Reset a user's password",
        "admin",
        {200: _json(TemporaryPassword, "A random temporary password, shown once.")},
        (*_EDGE, 403, 404, 409),
        auth="admin",
        parameters=(_path("user_id", "A user id or username."), _TENANT),
        action="admin.users.reset_password",
        description="Every session and access token of the user ends; the temporary password "
        "must be changed at first login.",
    ),
    ("GET", "/admin/api-keys"): Operation(
        "List a user's API keys",
        "admin",
        {200: _json(ApiKeyList, "The keys (never their secrets).")},
        (*_EDGE, 403, 404, 422),
        auth="admin",
        parameters=(
            {**_query("user", "The owner: a user id or username."), "required": True},
            _TENANT,
        ),
        action="admin.api_keys.list",
    ),
    ("POST", "/admin/api-keys"): Operation(
        "Create an API key",
        "admin",
        {201: _json(NewApiKey, "The key, with its secret shown once.")},
        _ADMIN,
        auth="admin",
        body=admin.CreateApiKey,
        parameters=(_TENANT,),
        action="admin.api_keys.create",
    ),
    ("DELETE", "/admin/api-keys/{key_id}"): Operation(
        "Revoke an API key",
        "admin",
        {204: _empty("Revoked.")},
        (*_EDGE, 403, 404),
        auth="admin",
        parameters=(_path("key_id", "The key's id."), _TENANT),
        action="admin.api_keys.revoke",
    ),
    ("POST", "/admin/keys/rotate"): Operation(
        "Rotate the signing keys (A6)",
        "admin",
        {200: _json(KeyRotation, "The new key and every key now held.")},
        (*_BODY, 403),
        auth="admin",
        body=admin.RotateKeys,
        body_required=False,
        action="admin.keys.rotate",
        description="`emergency: true` revokes every older key at once: every token signed "
        "with them is refused from then on.",
    ),
    ("GET", "/admin/audit"): Operation(
        "Query the audit log",
        "audit",
        {200: _json(AuditRecords, "The newest matching records first.")},
        (*_EDGE, 403, 422),
        auth="admin",
        parameters=(
            _query("action", "An action, e.g. `auth.login`."),
            _query("actor", "A subject."),
            _query("tenant", "A tenant (a tenant admin always gets its own)."),
            _query("outcome", "`success`, `failure`, `deny` or `error`."),
            _query("since", "`24h`, `7d`, an ISO 8601 time or UNIX seconds."),
            _query("until", "`24h`, `7d`, an ISO 8601 time or UNIX seconds."),
            _query("limit", "At most this many records (default 100).", pattern=r"^\d+$"),
            _TENANT,
        ),
        action="audit.read",
    ),
    ("GET", "/admin/audit/verify"): Operation(
        "Verify the audit chain",
        "audit",
        {200: _json(ChainReport, "The finding: `ok` true, or where the chain breaks.")},
        (*_EDGE, 403, 422),
        auth="admin",
        parameters=(_query("anchor", "`SEQ:HASH` from an earlier verify: the log must reach it."),),
        action="audit.verify",
    ),
    ("GET", "/metrics"): Operation(
        "Prometheus metrics",
        "observability",
        {200: _text("text/plain", "The Prometheus text exposition format.")},
        (*_EDGE, 403),
        auth="admin",
        action="metrics.read",
        description="Platform admins only, unless GARRISON_METRICS_PUBLIC opens it.",
    ),
    ("PUT", "/v1/secrets/{name}"): Operation(
        "Store a secret",
        "vault",
        {
            200: _json(SecretInfo, "Replaced."),
            201: _json(SecretInfo, "Created."),
        },
        (*_ADMIN,),
        auth="admin",
        body=vault.PutSecret,
        parameters=(_path("name", "The secret's name.", _NAME), _TENANT),
        action="secret.write",
    ),
    ("GET", "/v1/secrets/{name}"): Operation(
        "Read a secret",
        "vault",
        {200: _json(SecretValue, "The secret and its value.")},
        (*_EDGE, 403, 404, 422),
        auth="admin",
        parameters=(
            _path("name", "The secret's name.", _NAME),
            _header("X-Justification", "Why it is read (required by the policy)."),
            _query("justification", "Why it is read, when a header cannot be sent."),
            _TENANT,
        ),
        action="secret.read",
    ),
    ("DELETE", "/v1/secrets/{name}"): Operation(
        "Delete a secret",
        "vault",
        {204: _empty("Deleted.")},
        (*_EDGE, 403, 404, 422),
        auth="admin",
        parameters=(
            _path("name", "The secret's name.", _NAME),
            _header("X-Reason", "Why it is deleted (required by the policy)."),
            _query("reason", "Why it is deleted, when a header cannot be sent."),
            _TENANT,
        ),
        action="secret.delete",
    ),
}

_SECURITY: dict[Auth, list[dict[str, list[str]]]] = {
    "none": [],
    "bearer": [{"bearerAuth": []}, {"sessionCookie": []}],
    "admin": [{"bearerAuth": []}, {"sessionCookie": []}],
}


def _operation(method: str, path: str, op: Operation) -> dict[str, Any]:
    responses: dict[str, Any] = {str(s): r for s, r in op.responses.items()}
    for status in sorted(set(op.errors)):
        responses.setdefault(
            str(status), {"$ref": f"#/components/responses/{_ERROR_NAMES[status]}"}
        )
    description = op.description
    if op.action:
        description = f"{description}\n\nDecided as the action `{op.action}`.".strip()
    out: dict[str, Any] = {
        "operationId": f"{method.lower()} {path}",
        "summary": op.summary,
        "tags": [op.tag],
        "responses": dict(sorted(responses.items())),
        "security": _SECURITY[op.auth],
    }
    if description:
        out["description"] = description
    if op.parameters:
        out["parameters"] = list(op.parameters)
    if op.body is not None:
        out["requestBody"] = {
            "required": op.body_required,
            "content": {
                "application/json": {"schema": {"$ref": _REF.format(model=op.body.__name__)}}
            },
        }
    if op.extra:
        out.update(op.extra)
    return out


def _schemas() -> dict[str, Any]:
    _, top = models_json_schema([(m, "validation") for m in _MODELS], ref_template=_REF)
    schemas: dict[str, Any] = top.get("$defs", {})
    return dict(sorted(schemas.items()))


def _version() -> str:
    try:
        return version("garrison")
    except PackageNotFoundError:  # pragma: no cover - a source tree that was never installed
        return "0"


def described() -> set[tuple[str, str]]:
    """Every (method, path template) the description covers."""
    return set(OPERATIONS)


def build(served: Iterable[tuple[str, str]] | None = None) -> dict[str, Any]:
    """The description. ``served`` (method, path) pairs, when given, must all be described."""
    if served is not None:
        missing = sorted(set(served) - set(OPERATIONS))
        if missing:
            raise LookupError(f"routes without a description: {missing}")
    paths: dict[str, dict[str, Any]] = {}
    for (method, path), op in OPERATIONS.items():
        paths.setdefault(path, {})[method.lower()] = _operation(method, path, op)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Garrison",
            "version": _version(),
            "summary": "Identity, tokens, policy, tenancy, forward auth, audit and vault.",
            "description": "Every error is RFC 9457 `application/problem+json`.",
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "servers": [{"url": "/"}],
        "tags": [{"name": t} for t in dict.fromkeys(op.tag for op in OPERATIONS.values())],
        "paths": paths,
        "components": {
            "schemas": _schemas(),
            "responses": {_ERROR_NAMES[s]: _error_response(s) for s in sorted(_ERROR_NAMES)},
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An access token (JWT) from /auth/login, or an API key.",
                },
                "sessionCookie": {
                    "type": "apiKey",
                    "in": "cookie",
                    "name": "__Host-garrison_session",
                    "description": "A browser session; state changes also need `X-CSRF-Token`.",
                },
            },
        },
    }
