"""For the fault suite: private Redis and PostgreSQL instances a test may stop, load from a few
client threads, and the figures each test prints.

Every dependency a test stops is its own: another loopback port, its own data directory, a child
process of the test (never the shared instances on 5432 and 6379). Every wait is bounded.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import redis

from garrison.app import build_services
from garrison.config import load_settings
from garrison.identity.users import User
from tests.conftest import PASSWORD
from tests.support import IN_CI, free_port, run_cli

PG_BIN = Path(os.environ.get("GARRISON_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))


def need(binary: Path | str) -> str:
    """The path of ``binary``; skipped locally, a failure in CI, when it is missing."""
    path = str(binary) if Path(binary).is_file() else shutil.which(str(binary))
    if path is None:
        message = f"{binary} is not installed"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return path


def wait_until(check: Callable[[], bool], timeout: float, step: float = 0.05) -> float:
    """Seconds until ``check()`` is true; AssertionError after ``timeout``."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        with contextlib.suppress(Exception):
            if check():
                return time.monotonic() - start
        time.sleep(step)
    raise AssertionError(f"not true within {timeout} s")


# -- private dependencies ------------------------------------------------------------------------
class PrivateRedis:
    """``redis-server`` on its own port and directory, without persistence; stop and start again."""

    def __init__(self, *extra: str) -> None:
        self.binary = need("redis-server")
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.dir = Path(tempfile.mkdtemp(prefix="garrison-fault-redis-"))
        self.extra = list(extra)  # more redis-server options (--replicaof HOST PORT)
        self.proc: subprocess.Popen[bytes] | None = None

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=1, socket_connect_timeout=1)

    def start(self) -> None:
        cmd = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        cmd += ["--appendonly", "no", "--dir", str(self.dir), *self.extra]
        log = (self.dir / "redis.log").open("ab")
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        client = redis.Redis(port=self.port, socket_timeout=1, socket_connect_timeout=1)
        try:
            wait_until(lambda: bool(client.ping()), 10)
        finally:
            client.close()

    def stop(self) -> None:
        """SIGKILL: the server is gone at once, as a crash or a network cut would leave it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class PrivateSentinel:
    """``redis-sentinel`` on its own port and directory, watching ``primary`` as ``service``
    (quorum 2 of 3), with short timeouts: a primary unreachable for 1 s is down."""

    def __init__(self, primary_port: int, service: str = "mymaster") -> None:
        self.binary = need("redis-sentinel")
        self.port = free_port()
        self.service = service
        self.dir = Path(tempfile.mkdtemp(prefix="garrison-fault-sentinel-"))
        self.config = self.dir / "sentinel.conf"
        self.config.write_text(  # Sentinel rewrites its configuration: a file of its own
            f"port {self.port}\nbind 127.0.0.1\ndir {self.dir}\n"
            f"sentinel monitor {service} 127.0.0.1 {primary_port} 2\n"
            f"sentinel down-after-milliseconds {service} 1000\n"
            f"sentinel failover-timeout {service} 10000\n"
            f"sentinel parallel-syncs {service} 1\n"
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=1, socket_connect_timeout=1)

    def start(self) -> None:
        log = (self.dir / "sentinel.log").open("ab")
        self.proc = subprocess.Popen(
            [self.binary, str(self.config)], stdout=log, stderr=subprocess.STDOUT
        )
        client = self.client()
        try:
            wait_until(lambda: bool(client.ping()), 10)
        finally:
            client.close()

    def master(self) -> dict[str, Any]:
        """What this Sentinel knows of its primary (``SENTINEL MASTER``)."""
        client = self.client()
        try:
            state = client.sentinel_master(self.service)
            assert isinstance(state, dict)
            return state
        finally:
            client.close()

    def primary_port(self) -> int:
        client = self.client()
        try:
            address = client.sentinel_get_master_addr_by_name(self.service)
            assert isinstance(address, (list, tuple))
            return int(address[1])
        finally:
            client.close()

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None
        shutil.rmtree(self.dir, ignore_errors=True)


class PrivatePostgres:
    """A throw-away PostgreSQL cluster (``initdb``) on its own port, owned by ``postgres`` when the
    tests run as root (the server refuses to run as root)."""

    def __init__(self) -> None:
        self.initdb = need(PG_BIN / "initdb")
        self.pg_ctl = need(PG_BIN / "pg_ctl")
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="garrison-fault-pg-"))
        self.data = self.root / "data"
        self.user: str | None = None
        if os.geteuid() == 0:
            self.user = "postgres"
            try:
                owner = pwd.getpwnam(self.user)
            except KeyError:
                pytest.fail("running as root needs a 'postgres' user to own the test cluster")
            os.chown(self.root, owner.pw_uid, owner.pw_gid)
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *cmd: str, timeout: float = 60) -> None:
        full = list(cmd)
        if self.user is not None:
            full = ["runuser", "-u", self.user, "--", *full]
        done = subprocess.run(full, capture_output=True, text=True, timeout=timeout, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd[:2])} failed:\n{done.stdout}\n{done.stderr}")

    def init(self) -> None:
        self._run(self.initdb, "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")

    def start(self) -> None:
        opts = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c max_connections=60"
        self._run(self.pg_ctl, "-D", str(self.data), "-o", opts, "-l", str(self.root / "log"),
                  "-w", "-t", "30", "start")  # fmt: skip

    def stop(self, mode: str = "immediate") -> None:
        """``immediate``: no shutdown checkpoint; the restart replays the WAL, as after a crash."""
        self._run(self.pg_ctl, "-D", str(self.data), "-m", mode, "-w", "-t", "30", "stop")

    def accepts(self) -> bool:
        with contextlib.suppress(psycopg.Error), psycopg.connect(self.url, connect_timeout=1):
            return True
        return False

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def private_redis() -> Iterator[PrivateRedis]:
    server = PrivateRedis()
    try:
        server.start()
        yield server
    finally:
        server.close()


@contextlib.contextmanager
def private_postgres() -> Iterator[PrivatePostgres]:
    server = PrivatePostgres()
    try:
        server.init()
        server.start()
        yield server
    finally:
        server.close()


# -- accounts ------------------------------------------------------------------------------------
def seed_users(env: Mapping[str, str], *specs: tuple[str, list[str]]) -> dict[str, User]:
    """Create users (name, roles) in the database ``env`` names, in this process (a CLI call per
    user would cost a Python start each)."""
    settings = load_settings(dict(env))
    svc = build_services(settings)
    try:
        return {name: svc.users.create(name, PASSWORD, roles=tuple(roles)) for name, roles in specs}
    finally:
        svc.close()


def login(base_url: str, username: str, timeout: float = 10) -> str:
    response = httpx.post(
        f"{base_url}/auth/login", json={"username": username, "password": PASSWORD}, timeout=timeout
    )
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def verify_headers(token: str, uri: str = "/api/tickets/1") -> dict[str, str]:
    return {**bearer(token), "X-Original-Method": "GET", "X-Original-URI": uri}


def audit_verify(env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    return run_cli("audit", "verify", env=env, timeout=120)


def metric(text: str, name: str) -> float:
    """The sum of every sample of ``name`` in a Prometheus text exposition."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            rest = line[len(name) :]
            if rest[:1] in (" ", "{"):
                total += float(line.rsplit(" ", 1)[1])
    return total


# -- load ----------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Sample:
    at: float  # monotonic seconds
    client: str
    status: int  # 0: no answer (connection refused, reset or timed out)
    retry_after: str | None
    request_id: str


Call = Callable[[httpx.Client, str], httpx.Response]  # (client, request id) -> response


def get(url: str, headers: Mapping[str, str] | None = None) -> Call:
    """GET ``url`` with ``headers`` (and the call's request id)."""
    return lambda c, rid: c.get(url, headers={**(headers or {}), "X-Request-ID": rid})


def login_call(base_url: str, username: str) -> Call:
    """POST /auth/login for ``username`` (the call's request id names its audit record)."""
    body = {"username": username, "password": PASSWORD}
    return lambda c, rid: c.post(f"{base_url}/auth/login", json=body, headers={"X-Request-ID": rid})


@dataclass
class Load:
    """A few client threads, each calling its ``Call`` in a loop until stopped (or ``limit`` s)."""

    calls: dict[str, Call]
    limit: float = 60.0
    pause: float = 0.01
    samples: list[Sample] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _loop(self, name: str, call: Call) -> None:
        deadline = time.monotonic() + self.limit
        n = 0
        with httpx.Client(timeout=5) as client:
            while not self._stop.is_set() and time.monotonic() < deadline:
                n += 1
                request_id = f"fault-{name}-{n}"
                try:
                    response = call(client, request_id)
                    sample = Sample(
                        time.monotonic(),
                        name,
                        response.status_code,
                        response.headers.get("retry-after"),
                        request_id,
                    )
                except httpx.HTTPError:
                    sample = Sample(time.monotonic(), name, 0, None, request_id)
                with self._lock:
                    self.samples.append(sample)
                time.sleep(self.pause)

    def __enter__(self) -> Load:
        for name, call in self.calls.items():
            thread = threading.Thread(target=self._loop, args=(name, call), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(15)

    def of(self, client: str | None = None, since: float = 0.0) -> list[Sample]:
        with self._lock:
            return [
                s for s in self.samples if (client is None or s.client == client) and s.at >= since
            ]

    def first_ok_streak(self, client: str, since: float, streak: int = 3) -> float | None:
        """When ``client`` began answering 200 for ``streak`` calls in a row after ``since``."""
        run: list[Sample] = []
        for sample in self.of(client, since):
            run = [*run, sample] if sample.status == 200 else []
            if len(run) >= streak:
                return run[0].at
        return None


def report(request: pytest.FixtureRequest, title: str, **figures: Any) -> None:
    """Print what a fault test measured, on the terminal even under output capture."""
    line = f"[fault] {title}: " + ", ".join(f"{k}={v}" for k, v in figures.items())
    capman = request.config.pluginmanager.getplugin("capturemanager")
    with capman.global_and_fixture_disabled() if capman else contextlib.nullcontext():
        print("\n" + line, flush=True)
    for key, value in figures.items():
        request.node.user_properties.append((key, value))


def kill_group(proc: subprocess.Popen[bytes] | None) -> None:
    """SIGKILL a child started in its own session (``LiveServer``), and reap it."""
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)
