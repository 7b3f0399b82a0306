"""A stand-in for a self-hosted Supabase GoTrue's refresh grant, on a real loopback HTTP port.

GoTrue itself cannot run here; this speaks the one endpoint Garrison uses, as supabase/auth
implements it (``internal/api/token_refresh.go``): ``POST /token?grant_type=refresh_token`` with a
JSON body ``{"refresh_token": ...}`` answers 200 with ``access_token``, ``token_type`` ("bearer"),
``expires_in``, ``expires_at``, ``refresh_token`` and ``user``; an unknown, used or revoked refresh
token answers 400 ``{"error": "invalid_grant", "error_description": "Invalid Refresh Token: ..."}``.
Each refresh token is spent on use and its successor issued; reusing a spent one revokes the family,
as GoTrue does with rotation enabled. Access tokens are HS256 under the project's JWT secret.

``mode`` makes it misbehave: ``"error"`` (500), ``"slow"`` (answers late), ``"redirect"`` (307 to
``redirect_to``), ``"garbage"`` (200 that is not a token response), ``"foreign"`` (a token signed
with another secret), ``"busy"`` (429 with Retry-After).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.jose import jws, segment


def hs256(claims: dict[str, Any], secret: str) -> str:
    head = {"alg": "HS256", "typ": "JWT"}
    data = f"{segment(head)}.{segment(claims)}".encode()
    return jws(head, claims, signature=hmac.new(secret.encode(), data, hashlib.sha256).digest())


@dataclass
class Seen:
    """One request the stand-in received."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes


@dataclass
class GoTrueStandIn:
    secret: str
    issuer: str
    audience: str = "authenticated"
    expires_in: int = 3600
    mode: str = "ok"
    slow_seconds: float = 3.0
    redirect_to: str = ""
    seen: list[Seen] = field(default_factory=list)
    #: refresh token -> (sub, email, role, family); spent tokens stay, marked
    tokens: dict[str, tuple[str, str, str, str]] = field(default_factory=dict)
    spent: set[str] = field(default_factory=set)
    revoked: set[str] = field(default_factory=set)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"

    def issue(self, sub: str, *, email: str = "", role: str = "authenticated") -> str:
        """A refresh token for a fresh session of ``sub`` (what a GoTrue sign-in hands out)."""
        token = secrets.token_urlsafe(9)
        self.tokens[token] = (sub, email, role, secrets.token_hex(8))
        return token

    def access_token(self, sub: str, email: str, role: str, secret: str | None = None) -> str:
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": sub,
            "email": email,
            "role": role,
            "iat": now,
            "exp": now + self.expires_in,
            "session_id": secrets.token_hex(8),
        }
        return hs256(claims, secret or self.secret)

    # -- the endpoint --------------------------------------------------------------------------
    def answer(self, seen: Seen) -> tuple[int, dict[str, str], bytes]:
        self.seen.append(seen)
        if self.mode == "error":
            return 500, {}, b'{"code":500,"error_code":"unexpected_failure","msg":"boom"}'
        if self.mode == "busy":
            return 429, {"Retry-After": "7"}, b'{"code":429,"error_code":"over_request_rate_limit"}'
        if self.mode == "redirect":
            return 307, {"Location": self.redirect_to}, b""
        if self.mode == "slow":
            time.sleep(self.slow_seconds)
        if self.mode == "garbage":
            return 200, {}, b'{"hello": "world"}'
        if seen.method != "POST" or seen.path != "/token":
            return 404, {}, b'{"code":404,"error_code":"not_found","msg":"Not Found"}'
        if seen.query.get("grant_type") != ["refresh_token"]:
            return 400, {}, _oauth_error("unsupported_grant_type", "unsupported_grant_type")
        try:
            token = json.loads(seen.body)["refresh_token"]
        except (ValueError, KeyError, TypeError):
            return 400, {}, _oauth_error("invalid_request", "refresh_token required")
        if token not in self.tokens:
            return 400, {}, _oauth_error("invalid_grant", "Invalid Refresh Token: Not Found")
        sub, email, role, family = self.tokens[token]
        if family in self.revoked:
            return 400, {}, _oauth_error("invalid_grant", "Invalid Refresh Token: Revoked")
        if token in self.spent:
            self.revoked.add(family)
            return 400, {}, _oauth_error("invalid_grant", "Invalid Refresh Token: Already Used")
        self.spent.add(token)
        successor = secrets.token_urlsafe(9)
        self.tokens[successor] = (sub, email, role, family)
        secret = "another-projects-secret-with-32-chars!!" if self.mode == "foreign" else None
        body = {
            "access_token": self.access_token(sub, email, role, secret),
            "token_type": "bearer",
            "expires_in": self.expires_in,
            "expires_at": int(time.time()) + self.expires_in,
            "refresh_token": successor,
            "user": {"id": sub, "aud": self.audience, "role": role, "email": email},
        }
        return 200, {}, json.dumps(body).encode()

    # -- the server ----------------------------------------------------------------------------
    def start(self) -> GoTrueStandIn:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                parts = urlsplit(self.path)
                seen = Seen(
                    self.command,
                    parts.path,
                    parse_qs(parts.query),
                    {k.lower(): v for k, v in self.headers.items()},
                    self.rfile.read(length) if length else b"",
                )
                status, headers, body = standin.answer(seen)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            do_POST = _serve
            do_GET = _serve

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


def _oauth_error(error: str, description: str) -> bytes:
    return json.dumps({"error": error, "error_description": description}).encode()
