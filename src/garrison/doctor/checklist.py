"""The doctor's checklist (O4): every check as written down, in one table.

An entry names the check's title, the seed guides and requirement IDs it comes from, and the fix an
operator applies when it does not pass; ``live`` marks a check that needs ``--url``, ``asks_target``
one that judges the ``--url`` deployment when there is one. The function that looks is registered
under the same id in its area's module (``@checks.add(id)``), in report order.
"""

from __future__ import annotations

from garrison.doctor.model import About

CHECKLIST: dict[str, About] = {
    # -- identity --------------------------------------------------------------------------------
    "identity.secrets": About(
        "Secrets are strong and not defaults",
        seeds=("001", "002", "003"),
        reqs=("C2", "C1"),
        fix="run `garrison secrets generate` and set each value from your secret store "
        "(or a *_FILE path)",
    ),
    "identity.secret-rotation": About(
        "Secrets rotated on schedule",
        seeds=("000", "004"),
        reqs=("C5",),
        fix="generate a new value (`garrison secrets generate`) and restart with it; for "
        "SECRET_ENCRYPTION_KEY keep the old value in GARRISON_SECRET_ENCRYPTION_KEYS_OLD and run "
        "`garrison vault rewrap`",
    ),
    "identity.jwt-for-admin": About(
        "Admin needs a JWT, never an API key alone",
        seeds=("000", "001"),
        reqs=("A7",),
        fix="set REQUIRE_JWT_FOR_ADMIN=true",
    ),
    "identity.mfa-for-admin": About(
        "Admin needs a second factor",
        # the seeds' admin-access guidance (as for identity.jwt-for-admin); MFA itself is ASVS 6.3.3
        seeds=("000", "001"),
        reqs=("A14",),
        fix="set GARRISON_REQUIRE_MFA_FOR_ADMIN=true (the production default), and have each admin "
        "enrol a TOTP authenticator (POST /auth/mfa/totp) before it is on",
    ),
    "identity.external-idp-secrets": About(
        "External IdP shared secrets are strong",
        seeds=("001",),
        reqs=("A10", "C2"),
        fix="set each external IdP's HS256 secret variable to the IdP's real JWT secret "
        "(at least 32 random bytes), and its audience",
    ),
    "identity.admin-exists": About(
        "An operator account exists",
        seeds=("001", "003"),
        reqs=("A1",),
        fix="create one: `garrison users create --username U --role admin --password-stdin`",
    ),
    "identity.default-passwords": About(
        "No admin keeps a default password",
        seeds=("001",),
        reqs=("A1", "C2"),
        fix="disable the account now (`garrison users disable U`) and create a new admin with a "
        "strong password",
    ),
    "identity.api-key-rotation": About(
        "API keys expire and are rotated",
        seeds=("000", "004"),
        reqs=("C5", "A7"),
        fix="issue a replacement with `garrison api-keys create --user U --scope S --expires-in 90d`, "
        "move clients to it, then `garrison api-keys revoke ID`",
    ),
    "identity.oidc": About(
        "OIDC logins ask for minimal scopes over HTTPS",
        seeds=("002", "003"),
        reqs=("A11",),
        fix="request only openid, email (and profile); use an https redirect_uri; set the client "
        "secret variable",
    ),
    "identity.policy-tests": About(
        "Policies load and their unit tests pass",
        seeds=("000", "004"),
        reqs=("Z4", "Z3"),
        fix="run `garrison policy test` and fix the policies or tables it names",
    ),
    "identity.login-uniform": About(
        "Failed logins look the same for every username",
        seeds=("001", "003"),
        reqs=("A1",),
        fix="return one generic 401 problem body for every failed login (Garrison does by default; "
        "check what a proxy in front rewrites)",
        live=True,
    ),
    "identity.admin-anonymous": About(
        "Admin endpoints refuse anonymous callers",
        seeds=("001",),
        reqs=("Z5",),
        fix="put /admin/* behind Garrison's admin check (or the network) so an anonymous call gets 401",
        live=True,
    ),
    "identity.login-rate-limit": About(
        "Repeated failed logins are throttled",
        seeds=("002", "003", "004"),
        reqs=("A13", "E3"),
        fix="keep GARRISON_LOGIN_MAX_FAILURES / GARRISON_LOGIN_MAX_FAILURES_PER_IP set and, with several "
        "replicas, USE_REDIS_LIMITER=true",
        live=True,
    ),
    # -- tokens ----------------------------------------------------------------------------------
    "tokens.key-rotation": About(
        "Signing key rotated on schedule",
        seeds=("000", "004"),
        reqs=("C5", "A6"),
        fix="run `garrison keys rotate` (old tokens keep verifying until they expire)",
    ),
    "tokens.signing-algorithm": About(
        "Tokens are signed with an approved algorithm",
        seeds=("001", "002", "004"),
        reqs=("A2",),
        fix="set GARRISON_SIGNING_ALG=PS256 (or ES256, EdDSA) and run `garrison keys rotate`: tokens "
        "of the RS256 key keep verifying until they expire",
    ),
    "tokens.access-ttl": About(
        "Access tokens are short-lived",
        seeds=("002", "004"),
        reqs=("A2",),
        fix="set GARRISON_ACCESS_TTL=900 (15 minutes) and rely on refresh tokens",
    ),
    "tokens.jwks": About(
        "JWKS publishes only public signing keys",
        seeds=("000",),
        reqs=("A6",),
        fix="serve /.well-known/jwks.json from Garrison's keyring (public parts, kid, alg, use only)",
        live=True,
    ),
    "tokens.discovery": About(
        "Discovery document names this issuer and asymmetric algorithms",
        seeds=("001", "002", "004"),
        reqs=("A2",),
        fix="set GARRISON_ISSUER to the public URL clients use, and keep GARRISON_SIGNING_ALG "
        "asymmetric (PS256, ES256 or EdDSA)",
        live=True,
    ),
    "tokens.alg-none": About(
        "Unsigned (alg=none) tokens are refused",
        seeds=("004",),
        reqs=("A3",),
        fix="verify tokens only with Garrison's algorithm allow-list; never accept alg=none",
        live=True,
    ),
    "tokens.alg-confusion": About(
        "HS256 tokens keyed with the public key are refused",
        seeds=("004",),
        reqs=("A3",),
        fix="pin each key's algorithm (kid -> alg) and never verify an HMAC with a public key",
        live=True,
    ),
    "tokens.query-string": About(
        "Tokens in the query string are refused",
        seeds=("001",),
        reqs=("A8",),
        fix="accept credentials only in the Authorization header; refuse ?access_token= and the like",
        live=True,
    ),
    # -- tenancy ---------------------------------------------------------------------------------
    "tenancy.tenant-header": About(
        "Authenticated requests must name their tenant",
        seeds=("001",),
        reqs=("T2",),
        fix="set REQUIRE_TENANT_HEADER=true",
    ),
    "tenancy.runtime-role": About(
        "The service's database login is least-privilege",
        seeds=("000", "003"),
        reqs=("T4",),
        fix="run `garrison db roles` as a superuser, then point DATABASE_URL at the app_rw role",
    ),
    "tenancy.row-level-security": About(
        "Row-level security guards every tenant table",
        seeds=("000", "003"),
        reqs=("T4", "T3"),
        fix="run `garrison db upgrade` (migration 0002 enables row-level security and its policies)",
    ),
    # -- edge ------------------------------------------------------------------------------------
    "edge.hsts-setting": About(
        "HSTS is enabled",
        seeds=("000", "002"),
        reqs=("E1",),
        fix="set ENABLE_HSTS=true (after TLS works on every host name)",
    ),
    "edge.cors-setting": About(
        "CORS allows named origins only",
        seeds=("002", "003"),
        reqs=("E2",),
        fix="list the exact origins in GARRISON_CORS_ORIGINS (no '*')",
    ),
    "edge.rate-limiter": About(
        "Rate limits are shared across replicas",
        seeds=("000", "001", "004"),
        reqs=("E3",),
        fix="set USE_REDIS_LIMITER=true and REDIS_URL so every worker and replica counts together",
    ),
    "edge.trusted-proxies": About(
        "X-Forwarded-* trusted only from known proxies",
        seeds=("001",),
        reqs=("E5",),
        fix="set GARRISON_TRUSTED_PROXIES to the addresses of your load balancer/ingress only",
    ),
    "edge.force-https": About(
        "Plain HTTP is redirected or refused",
        seeds=("002",),
        reqs=("E6",),
        fix="set GARRISON_FORCE_HTTPS=redirect (or reject), or enforce HTTPS at the proxy",
    ),
    "edge.body-caps": About(
        "Request bodies are capped",
        seeds=("001",),
        reqs=("E4",),
        fix="keep GARRISON_MAX_BODY_BYTES and BUS_MAX_BYTES near 1 MiB; raise per route in "
        "garrison.toml where needed",
    ),
    "edge.csp-connect-src": About(
        "CSP connect-src names real origins",
        seeds=("000", "001"),
        reqs=("E1",),
        fix="list your API/UI/CDN origins in GARRISON_CSP_CONNECT_SRC (no '*', no bare scheme)",
    ),
    "edge.security-headers": About(
        "Security headers on every response",
        seeds=("000", "001", "003"),
        reqs=("E1",),
        fix="serve through Garrison's edge (it adds CSP, COOP/COEP/CORP, nosniff, Referrer-Policy); "
        "make sure the proxy in front does not strip them",
        live=True,
    ),
    "edge.hsts": About(
        "HSTS sent over HTTPS",
        seeds=("000", "002"),
        reqs=("E1",),
        fix="set ENABLE_HSTS=true",
        live=True,
    ),
    "edge.tls-certificate": About(
        "TLS certificate trusted and not expiring",
        seeds=("004",),
        reqs=("E6",),
        fix="renew the certificate (automate it: ACME) and serve the full chain",
        live=True,
    ),
    "edge.cors-preflight": About(
        "CORS refuses a foreign origin",
        seeds=("002", "003"),
        reqs=("E2",),
        fix="allow-list origins in GARRISON_CORS_ORIGINS; never echo Origin or send '*'",
        live=True,
    ),
    "edge.forwarded-headers": About(
        "A forged X-Forwarded-Proto is not believed",
        seeds=("001",),
        reqs=("E5", "E6"),
        fix="set GARRISON_TRUSTED_PROXIES to your proxies only, and have the proxy overwrite "
        "X-Forwarded-* on the way in",
        live=True,
    ),
    "edge.body-limit": About(
        "Oversized bodies get 413",
        seeds=("001",),
        reqs=("E4",),
        fix="keep GARRISON_MAX_BODY_BYTES at 1 MiB and cap bodies at the proxy too",
        live=True,
    ),
    "edge.problem-json": About(
        "Errors are problem+json without internals",
        seeds=("002", "004"),
        reqs=("E7",),
        fix="let Garrison render errors (RFC 9457 problem+json); do not let a proxy replace them with "
        "HTML error pages",
        live=True,
    ),
    # -- audit -----------------------------------------------------------------------------------
    "audit.persistent-log": About(
        "Audit records persist",
        seeds=("001", "004"),
        reqs=("L1",),
        fix="keep the audit_log table (`garrison db upgrade`) and set AUDIT_LOG_PATH to a writable "
        "file shipped off the host",
    ),
    "audit.chain": About(
        "The audit hash chain is intact",
        seeds=("004",),
        reqs=("L7",),
        fix="investigate at once: `garrison audit verify` names the first altered, missing or "
        "inserted record; compare with the JSON-lines copy",
    ),
    "audit.tracing": About(
        "Traces are exported",
        seeds=("000", "001"),
        reqs=("L9", "L6"),
        fix="set OTEL_EXPORTER_OTLP_ENDPOINT to your collector",
    ),
    # -- operations ------------------------------------------------------------------------------
    "operations.production-mode": About(
        "Production mode is on",
        seeds=("001", "003"),
        reqs=("C1", "C2", "C3"),
        fix="set GARRISON_ENV=production (it refuses weak settings and never reads .env)",
        asks_target=True,
    ),
    "operations.database-url": About(
        "DATABASE_URL is PostgreSQL over TLS",
        seeds=("001", "004"),
        reqs=("C3",),
        fix="set DATABASE_URL=postgresql://USER@HOST/DB?sslmode=verify-full",
    ),
    "operations.other-refusals": About(
        "Nothing else production would refuse",
        seeds=("001", "003"),
        reqs=("C2",),
        fix="fix each named setting; `garrison serve` in production refuses to start until then",
    ),
    "operations.database-reachable": About(
        "The database answers",
        seeds=("001", "004"),
        reqs=("L8", "C3"),
        fix="check DATABASE_URL, the network path and the credentials",
    ),
    "operations.migrations": About(
        "Schema migrated, no drift",
        seeds=("001", "003"),
        reqs=("O2",),
        fix="run `garrison db upgrade` from your deploy pipeline, then `garrison db check`",
    ),
    "operations.redis": About(
        "Redis answers",
        seeds=("000", "001"),
        reqs=("E3", "L8"),
        fix="check REDIS_URL, the network path and the credentials",
    ),
    "operations.backups": About(
        "A recent backup exists",
        seeds=("000", "001", "002", "004"),
        reqs=("O1",),
        fix="schedule `garrison backup create DIR/garrison-$(date +%F).gbak` (encrypted) at least "
        "daily, keep copies off the host, and test `garrison backup restore FILE` regularly",
    ),
    "operations.metrics-setting": About(
        "/metrics needs an admin",
        seeds=("001",),
        reqs=("Z5", "L8"),
        fix="unset GARRISON_METRICS_PUBLIC, or make sure only the scraper can reach the port",
    ),
    "operations.healthz": About(
        "/healthz is minimal",
        seeds=("001", "002"),
        reqs=("L8",),
        fix='serve /healthz from Garrison: 200 {"status":"ok"} and nothing else',
        live=True,
    ),
    "operations.readyz": About(
        "/readyz reports the database ready",
        seeds=("001", "002"),
        reqs=("L8",),
        fix="check DATABASE_URL and REDIS_URL on the server; /readyz names the failing dependency",
        live=True,
    ),
    "operations.metrics-protected": About(
        "/metrics is not public",
        seeds=("001",),
        reqs=("Z5", "L8"),
        fix="unset GARRISON_METRICS_PUBLIC (admin JWT required) or restrict /metrics at the network",
        live=True,
    ),
}
