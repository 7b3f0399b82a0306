"""Helpers shared by the test suites: real databases, free ports, live servers."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import redis

PG_ADMIN_URL = os.environ.get("GARRISON_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("GARRISON_TEST_REDIS", "redis://127.0.0.1:6379/0")
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def unavailable(what: str, why: object) -> None:
    """Skip locally when a service is down; in CI a missing service is a failure, never a skip."""
    message = f"{what} unavailable: {why}"
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


def pg_url(dbname: str) -> str:
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    return f"{base}/{dbname}"


def create_pg_database(prefix: str = "garrison_t") -> str:
    """A fresh, uniquely named PostgreSQL database; returns its URL."""
    name = f"{prefix}_{os.getpid()}_{secrets.token_hex(4)}"
    try:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.Error as exc:
        unavailable("PostgreSQL", exc)
    return pg_url(name)


def drop_pg_database(url: str) -> None:
    name = url.rsplit("/", 1)[1]
    with contextlib.suppress(psycopg.Error), psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def redis_client() -> redis.Redis:
    client = redis.Redis.from_url(REDIS_URL, socket_timeout=2, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        unavailable("Redis", exc)
    return client


def redis_prefix() -> str:
    return f"garrison-test:{os.getpid()}:{secrets.token_hex(4)}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def base_env(data_dir: Path, **extra: str) -> dict[str, str]:
    """A clean environment for a child ``garrison`` process."""
    keep = {
        k: v for k, v in os.environ.items() if k in {"PATH", "HOME", "LANG", "LC_ALL", "TMPDIR"}
    }
    keep.update({"GARRISON_DATA_DIR": str(data_dir), "GARRISON_DOTENV": "/nonexistent"})
    keep.update(extra)
    return keep


def garrison_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "garrison", *args]


def run_cli(
    *args: str, env: Mapping[str, str], stdin: str | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        garrison_cmd(*args),
        input=stdin,
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def create_admin(
    env: Mapping[str, str], password: str, name: str = "root"
) -> subprocess.CompletedProcess[str]:
    """``garrison users create`` of a platform admin whose password is their own (no forced
    change: the test logs in with it at once); asserts the command succeeded."""
    made = run_cli(
        *("users", "create", "--username", name, "--role", "admin", "--password-stdin"),
        "--no-password-change",
        env=env,
        stdin=password + "\n",
    )
    assert made.returncode == 0, made.stderr
    return made


class LiveServer:
    """``garrison serve`` in a child process on a free loopback port; stopped on exit."""

    def __init__(self, env: Mapping[str, str], *extra_args: str, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = dict(env)
        self.args = extra_args
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = Path(self.env["GARRISON_DATA_DIR"]) / f"serve-{self.port}.log"

    def start(self, timeout: float = 30) -> LiveServer:
        Path(self.env["GARRISON_DATA_DIR"]).mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            garrison_cmd("serve", "--port", str(self.port), *self.args),
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.log()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"server did not become healthy:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def __enter__(self) -> LiveServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


@contextlib.contextmanager
def live_server(env: Mapping[str, str], *args: str) -> Iterator[LiveServer]:
    server = LiveServer(env, *args)
    with server:
        yield server
