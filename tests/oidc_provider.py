"""A small but honest OIDC provider for tests (A10, A11): discovery, JWKS, an auto-approving
``/authorize`` and a ``/token`` endpoint that checks what a real provider checks (client
authentication, single-use codes bound to the redirect URI, the PKCE S256 verifier).

It runs as a Starlette app under uvicorn on a free loopback port in a background thread. Attack
tests turn its knobs (``id_token_claims``, ``id_token_header``, ``signing_key``) to make it issue
exactly the bad id_token they need; nothing in here goes through Garrison's code.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlencode

import uvicorn
from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from garrison.keys.algorithms import PrivateKey, b64url, public_jwk, signer
from tests.support import free_port

CLIENT_ID = "garrison-test-client"
CLIENT_SECRET = "test-client-secret-0123456789abcdefghijklmnop"


def s256(verifier: str) -> str:
    return (
        base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    )


def sign_jwt(key: PrivateKey, header: dict[str, Any], claims: dict[str, Any]) -> str:
    head = b64url(json.dumps(header).encode())
    body = b64url(json.dumps(claims).encode())
    return f"{head}.{body}.{b64url(signer(key, header.get('alg'))(f'{head}.{body}'.encode()))}"


class TestProvider:
    __test__ = False  # not a pytest class

    def __init__(self, *, client_id: str = CLIENT_ID, client_secret: str = CLIENT_SECRET) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.key: PrivateKey = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = "test-kid-1"
        self.subject = "user-1"
        self.email = "alice@example.test"
        self.codes: dict[str, dict[str, Any]] = {}
        self.token_requests: list[dict[str, str]] = []
        self.jwks_fetches = 0
        # knobs for attack tests
        self.id_token_claims: Callable[[dict[str, Any]], dict[str, Any]] = lambda c: c
        self.id_token_header: Callable[[dict[str, Any]], dict[str, Any]] = lambda h: h
        self.signing_key: PrivateKey | None = None  # sign with another key than the JWKS one
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    # -- tokens -------------------------------------------------------------------------------
    def jwks(self) -> dict[str, Any]:
        return {"keys": [public_jwk(self.key, "RS256", self.kid)]}

    def sign(self, claims: dict[str, Any], **header: Any) -> str:
        head = {"alg": "RS256", "typ": "JWT", "kid": self.kid, **header}
        return sign_jwt(self.key, head, claims)

    def _id_token(self, grant: dict[str, Any]) -> str:
        now = int(time.time())
        claims = {
            "iss": self.url,
            "sub": grant["sub"],
            "aud": self.client_id,
            "iat": now,
            "exp": now + 300,
            "nonce": grant["nonce"],
            "email": grant["email"],
            "email_verified": True,
        }
        header = self.id_token_header({"alg": "RS256", "typ": "JWT", "kid": self.kid})
        return sign_jwt(self.signing_key or self.key, header, self.id_token_claims(claims))

    # -- endpoints ----------------------------------------------------------------------------
    async def _discovery(self, _request: Request) -> Response:
        return JSONResponse(
            {
                "issuer": self.url,
                "authorization_endpoint": f"{self.url}/authorize",
                "token_endpoint": f"{self.url}/token",
                "jwks_uri": f"{self.url}/jwks",
                "response_types_supported": ["code"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "code_challenge_methods_supported": ["S256"],
                "token_endpoint_auth_methods_supported": ["client_secret_basic"],
            }
        )

    async def _jwks(self, _request: Request) -> Response:
        self.jwks_fetches += 1
        return JSONResponse(self.jwks())

    async def _authorize(self, request: Request) -> Response:
        q = request.query_params
        if (
            q.get("response_type") != "code"
            or q.get("client_id") != self.client_id
            or q.get("code_challenge_method") != "S256"
            or "openid" not in q.get("scope", "").split()
            or not q.get("code_challenge")
            or not q.get("redirect_uri")
        ):
            return JSONResponse({"error": "invalid_request"}, status_code=400)
        code = secrets.token_urlsafe(24)
        self.codes[code] = {
            "redirect_uri": q["redirect_uri"],
            "challenge": q["code_challenge"],
            "nonce": q.get("nonce"),
            "sub": self.subject,
            "email": self.email,
            "scope": q["scope"],
        }
        query = urlencode({"code": code, "state": q.get("state", ""), "iss": self.url})
        return RedirectResponse(f"{q['redirect_uri']}?{query}", status_code=302)

    async def _token(self, request: Request) -> Response:
        form = {k: v[0] for k, v in parse_qs((await request.body()).decode()).items()}
        self.token_requests.append(form)
        if not self._client_ok(request.headers.get("authorization", "")):
            return JSONResponse({"error": "invalid_client"}, status_code=401)
        grant = self.codes.pop(form.get("code", ""), None)  # single use
        if grant is None or form.get("grant_type") != "authorization_code":
            return JSONResponse({"error": "invalid_grant"}, status_code=400)
        if form.get("redirect_uri") != grant["redirect_uri"]:
            return JSONResponse({"error": "invalid_grant"}, status_code=400)
        if s256(form.get("code_verifier", "")) != grant["challenge"]:
            return JSONResponse({"error": "invalid_grant", "detail": "pkce"}, status_code=400)
        return JSONResponse(
            {
                "access_token": secrets.token_urlsafe(16),
                "token_type": "Bearer",
                "expires_in": 300,
                "id_token": self._id_token(grant),
            }
        )

    def _client_ok(self, authorization: str) -> bool:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() != "basic":
            return False
        expected = base64.b64encode(f"{self.client_id}:{self.client_secret}".encode()).decode()
        return secrets.compare_digest(value, expected)

    # -- lifecycle ----------------------------------------------------------------------------
    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/.well-known/openid-configuration", self._discovery),
                Route("/jwks", self._jwks),
                Route("/authorize", self._authorize),
                Route("/token", self._token, methods=["POST"]),
            ]
        )

    def start(self) -> TestProvider:
        config = uvicorn.Config(self.app(), host="127.0.0.1", port=self.port, log_level="warning")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("test OIDC provider did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> TestProvider:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
