"""Login and refresh throughput on SQLite and PostgreSQL, in-process and over HTTP (A1, A5).

Floors measured in the same run:
- login: one bare argon2id hash with Garrison's parameters (``identity.passwords.HASHER``), at the
  same concurrency. A login is one argon2id verify plus a session row, an audit record and a
  signed JWT, so login/s is reported as a fraction of the hash rate;
- refresh: Keycloak's published figure, 120 refresh/s per vCPU, for comparison per core.

In-process: ``services.auth.login`` / ``services.auth.refresh`` from a thread pool. Over HTTP: a
``garrison serve`` child (``tests.support.LiveServer``) driven by a few concurrent httpx clients.
PostgreSQL runs on a fresh database (``tests.support.create_pg_database``), dropped afterwards.
Every loop is bounded by a count and by time.

    uv run python bench/bench_auth.py [--seconds 3] [--threads 2] [--clients 4] [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support import (
    LiveServer,
    base_env,
    create_pg_database,
    drop_pg_database,
)

from bench.timing import table
from garrison.app import Services, build_services
from garrison.config import load_settings
from garrison.identity.passwords import HASHER
from garrison.identity.service import Client

PASSWORD = "bench password with enough entropy"
KEYCLOAK_REFRESH_PER_VCPU = 120.0
MAX_OPS = 1_000_000
CORES = os.cpu_count() or 1
#: throttles off for the benchmark (they are tested elsewhere); everything else as shipped
BENCH_ENV = {
    "GARRISON_REFRESH_MAX_PER_IP": "1000000000",
    "GARRISON_LOGIN_MAX_FAILURES_PER_IP": "1000000000",
    "GARRISON_DOTENV": "/nonexistent",
}


def rate(worker: Callable[[], object], threads: int, seconds: float) -> float:
    """Operations per second of ``worker`` run by ``threads`` threads for about ``seconds``."""
    deadline = time.perf_counter() + seconds
    counts = [0] * threads
    per_thread = MAX_OPS // threads

    def run(index: int) -> None:
        while counts[index] < per_thread and time.perf_counter() < deadline:
            worker()
            counts[index] += 1

    start = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(run, range(threads)))
    return sum(counts) / (time.perf_counter() - start)


def per_thread(factory: Callable[[], Callable[[], None]]) -> Callable[[], None]:
    """A worker whose state (a refresh-token chain, an HTTP client) belongs to its thread."""
    local = threading.local()

    def call() -> None:
        fn = getattr(local, "fn", None)
        if fn is None:
            fn = local.fn = factory()
        fn()

    return call


# -- in-process ----------------------------------------------------------------------------------
@contextmanager
def in_process(data_dir: Path, database_url: str | None) -> Iterator[Services]:
    env = {"GARRISON_DATA_DIR": str(data_dir), **BENCH_ENV}
    if database_url:
        env["DATABASE_URL"] = database_url
    services = build_services(load_settings(env))
    services.keyring.load()
    try:
        yield services
    finally:
        services.close()


def bench_in_process(services: Services, threads: int, seconds: float) -> tuple[float, float]:
    users = [f"bench{i}" for i in range(threads)]
    for name in users:
        if services.users.find(name) is None:
            services.users.create(name, PASSWORD)
    client = Client(ip="127.0.0.1", user_agent="bench")
    turn = iter(range(MAX_OPS))

    def login() -> None:
        services.auth.login(users[next(turn) % len(users)], PASSWORD, client)

    def refresher() -> Callable[[], None]:
        token = services.auth.login(users[0], PASSWORD, client).refresh_token

        def refresh() -> None:
            nonlocal token
            token = services.auth.refresh(token, client).refresh_token

        return refresh

    return rate(login, threads, seconds), rate(per_thread(refresher), threads, seconds)


# -- over HTTP -----------------------------------------------------------------------------------
def bench_http(
    data_dir: Path, database_url: str | None, clients: int, workers: int, seconds: float
) -> tuple[float, float]:
    with in_process(data_dir, database_url) as services:  # migrate and make the users first
        for i in range(clients):
            if services.users.find(f"web{i}") is None:
                services.users.create(f"web{i}", PASSWORD)
    extra = dict(BENCH_ENV)
    if database_url:
        extra["DATABASE_URL"] = database_url
    env = base_env(data_dir, **extra)
    with LiveServer(env, "--workers", str(workers)) as server:
        turn = iter(range(MAX_OPS))

        def login_client() -> Callable[[], None]:
            http = httpx.Client(base_url=server.url, timeout=30)

            def login() -> None:
                body = {"username": f"web{next(turn) % clients}", "password": PASSWORD}
                http.post("/auth/login", json=body).raise_for_status()

            return login

        def refresh_client() -> Callable[[], None]:
            http = httpx.Client(base_url=server.url, timeout=30)
            creds = {"username": f"web{next(turn) % clients}", "password": PASSWORD}
            token = http.post("/auth/login", json=creds).json()["refresh_token"]

            def refresh() -> None:
                nonlocal token
                response = http.post("/auth/refresh", json={"refresh_token": token})
                response.raise_for_status()
                token = response.json()["refresh_token"]

            return refresh

        logins = rate(per_thread(login_client), clients, seconds)
        refreshes = rate(per_thread(refresh_client), clients, seconds)
    return logins, refreshes


# -- report --------------------------------------------------------------------------------------
def hash_rate(threads: int, seconds: float) -> float:
    return rate(lambda: HASHER.hash(PASSWORD), threads, seconds)


def row(label: str, logins: float, refreshes: float, floor: float) -> list[str]:
    return [
        label,
        f"{floor:6.1f}",
        f"{logins:8.1f}",
        f"{logins / CORES:7.1f}",
        f"{logins / floor:5.2f}x",
        f"{refreshes:8.1f}",
        f"{refreshes / CORES:7.1f}",
        f"{refreshes / CORES / KEYCLOAK_REFRESH_PER_VCPU:5.2f}x",
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="per measured phase")
    parser.add_argument("--threads", type=int, default=2, help="in-process thread pool (2-4)")
    parser.add_argument("--clients", type=int, default=4, help="concurrent HTTP clients")
    parser.add_argument("--workers", type=int, default=2, help="`garrison serve --workers`")
    parser.add_argument("--skip-http", action="store_true")
    parser.add_argument("--skip-postgres", action="store_true")
    args = parser.parse_args(argv)

    rows: list[list[str]] = []
    backends: list[str] = ["sqlite"] + ([] if args.skip_postgres else ["postgres"])
    for backend in backends:
        pg_url = create_pg_database("garrison_bench") if backend == "postgres" else None
        try:
            with tempfile.TemporaryDirectory() as tmp:
                data = Path(tmp)
                # the floor is measured right before each row: the machine is shared
                floor = hash_rate(args.threads, args.seconds)
                with in_process(data, pg_url) as services:
                    logins, refreshes = bench_in_process(services, args.threads, args.seconds)
                label = f"{backend} in-process x{args.threads} threads"
                rows.append(row(label, logins, refreshes, floor))
                if not args.skip_http:
                    floor = hash_rate(args.clients, args.seconds)
                    logins, refreshes = bench_http(
                        data, pg_url, args.clients, args.workers, args.seconds
                    )
                    label = f"{backend} HTTP x{args.clients} clients, {args.workers} workers"
                    rows.append(row(label, logins, refreshes, floor))
        finally:
            if pg_url:
                drop_pg_database(pg_url)

    print(
        f"argon2id floor: HASHER.hash with time_cost={HASHER.time_cost}, "
        f"memory_cost={HASHER.memory_cost} KiB, parallelism={HASHER.parallelism}, "
        "at the row's concurrency, measured just before the row"
    )
    print(f"per-core figures divide by {CORES} vCPUs (server and load generator share them)\n")
    header = ["run", "hash/s", "login/s", "/core", "vs hash", "refresh/s", "/core", "vs Keycloak"]
    print(table(header, rows))
    print(f"\n(Keycloak: {KEYCLOAK_REFRESH_PER_VCPU:.0f} refresh/s per vCPU, its published figure)")


if __name__ == "__main__":
    main()
