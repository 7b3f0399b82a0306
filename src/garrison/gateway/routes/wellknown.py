"""Discovery: JWKS (current and previous keys) and the OpenID configuration document."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

from garrison.gateway.requests import services
from garrison.keys.algorithms import ALGORITHMS


async def jwks(request: Request) -> JSONResponse:
    body = services(request).keyring.jwks()
    return JSONResponse(body, headers={"Cache-Control": "public, max-age=60"})


async def openid_configuration(request: Request) -> JSONResponse:
    settings = services(request).settings
    base = settings.issuer.rstrip("/")
    return JSONResponse(
        {
            "issuer": settings.issuer,
            "jwks_uri": f"{base}/.well-known/jwks.json",
            "token_endpoint": f"{base}/auth/login",
            "userinfo_endpoint": f"{base}/auth/me",
            "revocation_endpoint": f"{base}/auth/logout",
            "id_token_signing_alg_values_supported": list(ALGORITHMS),
            "token_endpoint_auth_signing_alg_values_supported": list(ALGORITHMS),
            "grant_types_supported": ["password", "refresh_token"],
            "response_types_supported": ["token"],
            "subject_types_supported": ["public"],
            "claims_supported": [
                "sub",
                "email",
                "preferred_username",
                "roles",
                "permissions",
                "tenant",
                "iss",
                "aud",
                "iat",
                "nbf",
                "exp",
                "jti",
                "sid",
            ],
        },
        headers={"Cache-Control": "public, max-age=300"},
    )


def routes() -> list[BaseRoute]:
    return [
        Route("/.well-known/jwks.json", jwks),
        Route("/.well-known/openid-configuration", openid_configuration),
    ]
