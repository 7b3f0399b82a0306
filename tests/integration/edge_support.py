"""For the edge integration tests: an echoing upstream, Garrison with a route table, and nginx /
Caddy run as child processes on free loopback ports with their configuration in a temporary dir."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

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
        "users", "create", "--username", name, *args, "--password-stdin", env=env, stdin=PASSWORD
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
