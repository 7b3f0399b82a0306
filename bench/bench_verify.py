"""Forward-auth throughput and cost: ``/verify`` against floors measured in the same run (E8).

    uv run python bench/bench_verify.py [--duration 5] [--rounds 3] [--connections 64]
                                        [--server granian|uvicorn]

Needs ``wrk`` and ``nginx`` (Debian: ``apt-get install -y wrk nginx``). Every server runs at once
(one worker, the options ``garrison serve`` uses), idle but for the run being measured:

  bare          a no-op ASGI app on the same HTTP server, same request         (floor)
  verify        /verify, every check on (JWT, user status, tenant, policy, limiter), one token reused
  bare-signed   the bare app, paying ``cryptography``'s verify of one token's signature on each
                request: what a first sight costs at the least on this server (measured; the
                goal's floor is computed: the bare app's CPU plus that verify timed in a loop)
  verify-new    /verify with a new token each request: a wrk Lua script walks a pre-issued list,
                each round its own slice, each wrk thread its own half (``--new-duration``
                seconds, no warm-up: a token seen once is remembered, so a second sight is a
                cached answer; the bench prints the share of requests that were a first sight)
  verify-redis  as verify, with the rate limits in Redis (USE_REDIS_LIMITER, leased budgets)
  nginx-noop    nginx auth_request to the no-op app, then a static file       (floor)
  nginx-verify  nginx auth_request to Garrison's /verify, then a static file

``--server`` picks the HTTP server under both the bare app and Garrison: granian (what ``garrison
serve`` runs) or uvicorn (``uvicorn --factory garrison.gateway.server:factory``, with the options
``garrison serve`` used to give it), so the two can be compared side by side, each against its own
floor. The CPU of a server is that of its whole process tree (granian's supervisor and worker).

The runs are interleaved: each round measures every run once, floors included, and a ratio is
taken between runs of the same round, so a machine that speeds up or slows down during the bench
(a shared VM does) moves floor and run together. The figures printed are the medians over the
rounds. For each: req/s, p50/p99 latency, the server's CPU time per request (utime+stime of the
server process from /proc, before and after: wrk shares the cores, so wall time is not CPU time).
The floor of ``verify-new`` is the bare app's CPU plus ``cryptography``'s own verify of one of
those tokens (what any verifier must pay), timed in this process. Last, /verify at half its peak
rate (wrk's ``delay()``) for the latency goal.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

TICK = os.sysconf("SC_CLK_TCK")
ROUTE_TOML = """
[[routes]]
prefix = "/api/tickets"
action = "ticket.comment"
"""
BARE_ASGI = textwrap.dedent(
    """
    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", b"0")]})
        await send({"type": "http.response.body", "body": b""})
    """
)
#: the bare app paying, on each request, ``cryptography``'s verify of one token's signature: the
#: measured floor of a first sight (the computed one adds the raw verify timed in a loop to bare)
BARE_SIGNED_ASGI = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, %(root)r)
    from cryptography.hazmat.primitives.serialization import load_pem_public_key
    from bench.bench_tokens import signature_check
    with open(%(pem)r, "rb") as fh:
        _check = signature_check(load_pem_public_key(fh.read()), %(alg)r, %(token)r)

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        _check()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", b"0")]})
        await send({"type": "http.response.body", "body": b""})
    """
)
#: uvicorn with the options ``garrison serve`` gave it before it ran granian
UVICORN = [
    "--host", "127.0.0.1", "--log-level", "warning", "--no-access-log", "--no-server-header",
    "--no-proxy-headers",
]  # fmt: skip
#: a bare app on granian, served by ``garrison.gateway.server.run`` (the options ``garrison serve``
#: gives it): ``python serve_bare.py MODULE --port N``
SERVE_BARE = textwrap.dedent(
    """
    import sys
    from pathlib import Path

    from garrison.gateway.server import run

    work = Path(__file__).resolve().parent
    run("127.0.0.1", int(sys.argv[3]), workers=1, log_level="warning",
        target=f"{sys.argv[1]}:app", factory=False, working_dir=work)
    """
)
SERVERS = ("granian", "uvicorn")
#: req/s that verify-new is not expected to exceed on this kind of machine: the token pool is sized
#: from it, and the bench says so when a run went faster (some requests were then second sights)
NEW_RATE_BOUND = 15000


def server_commands(server: str, work: Path, app: str = "bare_app") -> tuple[list[str], list[str]]:
    """The commands (each to be followed by a port) of a bare app (``app``: a module in ``work``)
    and of Garrison on ``server``."""
    if app == "bare_app":
        (work / "bare_app.py").write_text(BARE_ASGI)
    python = sys.executable
    if server == "uvicorn":
        bare = [python, "-m", "uvicorn", *UVICORN, "--app-dir", str(work), f"{app}:app"]
        factory = ["--factory", "garrison.gateway.server:factory"]
        return [*bare, "--port"], [python, "-m", "uvicorn", *UVICORN, *factory, "--port"]
    (work / "serve_bare.py").write_text(SERVE_BARE)
    bare = [python, str(work / "serve_bare.py"), app, "--port"]
    return bare, [python, "-m", "garrison", "serve", "--port"]


CYCLE_LUA = """
local tokens = {}
for line in io.lines("%(path)s") do tokens[#tokens + 1] = line end
local counter = 0
function setup(thread)
  thread:set("offset", counter)
  counter = counter + 1
end
function init(args)
  i = math.floor((tonumber(offset) or 0) * #tokens / 2)
end
function request()
  i = i + 1
  local t = tokens[(i %% #tokens) + 1]
  return wrk.format("GET", "/verify", {
    ["Authorization"] = "Bearer " .. t,
    ["X-Original-Method"] = "POST",
    ["X-Original-URI"] = "/api/tickets/7",
  })
end
"""
DELAY_LUA = """
function delay()
  return %(ms).3f
end
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process and its reaped children (/proc/<pid>/stat fields 14-17)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(v) for v in fields[11:15]) / TICK


def process_tree(roots: Sequence[int]) -> list[int]:
    """``roots`` and every live descendant (parent links from /proc/<pid>/stat)."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            stat = Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(stat[1]), []).append(int(entry.name))
    found, todo = [], list(roots)
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, ()))
    return found


def tree_cpu(roots: Sequence[int]) -> float:
    """CPU seconds of the trees under ``roots`` (each process's own and its reaped children's)."""
    total = 0.0
    for pid in process_tree(roots):
        with contextlib.suppress(OSError):
            total += cpu_seconds(pid)
    return total


@contextlib.contextmanager
def process(cmd: list[str], env: dict[str, str], health: str, log: Path) -> Iterator[int]:
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{cmd[0]} exited:\n{log.read_text(errors='replace')}")
            with contextlib.suppress(httpx.HTTPError):
                httpx.get(health, timeout=1)
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{cmd} did not start:\n{log.read_text(errors='replace')}")
            time.sleep(0.1)
        yield proc.pid
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@dataclass
class Result:
    name: str
    rps: float
    p50_ms: float
    p99_ms: float
    cpu_us: float  # server CPU per request
    non_2xx: int


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text.strip()).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def wrk(
    name: str,
    url: str,
    server_pid: int,
    args: argparse.Namespace,
    *,
    headers: dict[str, str] | None = None,
    script: Path | None = None,
    connections: int | None = None,
    warm: bool = True,
    duration: int | None = None,
) -> Result:
    seconds = duration or args.duration
    cmd = ["wrk", "-t2", f"-c{connections or args.connections}", f"-d{seconds}s", "--latency"]
    for key, value in (headers or {}).items():
        cmd += ["-H", f"{key}: {value}"]
    if script is not None:
        cmd += ["-s", str(script)]
    if warm:
        subprocess.run([*cmd[:3], "-d2s", *cmd[4:], url], capture_output=True, check=True)
    before = tree_cpu([server_pid])
    out = subprocess.run([*cmd, url], capture_output=True, text=True, check=True).stdout
    used = tree_cpu([server_pid]) - before
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    latency = dict(re.findall(r"^\s+(50|99)%\s+(\S+)$", out, re.M))
    return Result(
        name,
        float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        _ms(latency["50"]),
        _ms(latency["99"]),
        used / max(total, 1) * 1e6,
        int(non_2xx.group(1)) if non_2xx else 0,
    )


NGINX_CONF = """
worker_processes 1;
daemon off;
pid nginx.pid;
error_log error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path tmp;
    proxy_temp_path tmp;
    fastcgi_temp_path tmp;
    uwsgi_temp_path tmp;
    scgi_temp_path tmp;
    upstream auth { %(servers)s keepalive 64; }
    server {
        listen 127.0.0.1:%(port)d;
        root %(root)s;
        location = /_auth {
            internal;
            proxy_pass http://auth/verify;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header X-Original-Method $request_method;
            proxy_set_header X-Original-URI $request_uri;
            proxy_set_header X-Forwarded-For $remote_addr;
        }
        location / {
            auth_request /_auth;
            auth_request_set $user $upstream_http_x_auth_user;
            add_header X-User $user;
            try_files /ok.txt =404;
        }
    }
}
"""


@contextlib.contextmanager
def nginx_in_front(auth_port: int, work: Path, *more: int) -> Iterator[tuple[str, int]]:
    """nginx auth_request to ``/verify`` on ``auth_port`` (and on each of ``more``: one upstream)."""
    prefix = Path(tempfile.mkdtemp(prefix="bench-nginx-"))
    prefix.chmod(0o755)
    (prefix / "tmp").mkdir()
    (prefix / "www").mkdir()
    (prefix / "www" / "ok.txt").write_text("ok")
    for path in (prefix / "www", prefix / "www" / "ok.txt"):
        path.chmod(0o755)
    port = free_port()
    conf = prefix / "nginx.conf"
    servers = " ".join(f"server 127.0.0.1:{p};" for p in (auth_port, *more))
    conf.write_text(NGINX_CONF % {"servers": servers, "port": port, "root": prefix / "www"})
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    url = f"http://127.0.0.1:{port}"
    try:
        with process(
            [binary, "-p", str(prefix), "-c", str(conf)],
            dict(os.environ),
            f"{url}/x",
            work / f"nginx-{port}.log",
        ) as pid:
            yield url, pid
    finally:
        shutil.rmtree(prefix, ignore_errors=True)


def prepare(work: Path, count: int) -> tuple[dict[str, str], str, Path]:
    """A data dir with a support user; one token for reuse and ``count`` fresh ones in a file."""
    from garrison.app import build_services
    from garrison.config import load_settings
    from garrison.identity.service import Client

    (work / "garrison.toml").write_text(ROUTE_TOML)
    env = {
        **{k: v for k, v in os.environ.items() if k in {"PATH", "HOME", "LANG"}},
        "GARRISON_DATA_DIR": str(work / "data"),
        "GARRISON_DOTENV": "/nonexistent",
        "GARRISON_CONFIG": str(work / "garrison.toml"),
        "GARRISON_TRUSTED_PROXIES": "127.0.0.1/32",
        "GARRISON_RATE_LIMIT_PER_WINDOW": "1000000000",
        "GARRISON_LOG_LEVEL": "warning",
        # the tokens are issued here, in-process: the server must name the same issuer
        "GARRISON_ISSUER": "http://127.0.0.1:8080",
    }
    services = build_services(load_settings(env))
    services.keyring.load()
    services.users.create("bench", "a long password for the load test", roles=("support",))
    pair = services.auth.login("bench", "a long password for the load test", Client(ip="127.0.0.1"))
    claims = {
        k: v for k, v in pair.claims.items() if k not in {"iss", "aud", "iat", "nbf", "exp", "jti"}
    }
    tokens = work / "tokens.txt"
    _ISSUER["services"], _ISSUER["claims"] = services, claims  # the forked workers inherit it
    workers = os.cpu_count() or 1
    shares = [count // workers + (1 if i < count % workers else 0) for i in range(workers)]
    fork = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(workers, mp_context=fork) as pool, tokens.open("w") as fh:
        for issued in pool.map(_issue, shares):
            fh.writelines(token + "\n" for token in issued)
    _ISSUER.clear()
    services.close()
    return env, pair.access_token, tokens


_ISSUER: dict[str, Any] = {}


def _issue(count: int) -> list[str]:
    """``count`` tokens of the bench user (in a forked worker: signing is the slow part)."""
    services, claims = _ISSUER["services"], _ISSUER["claims"]
    return [services.codec.issue(claims)[0] for _ in range(count)]


def raw_verify_us(env: dict[str, str], token: str, work: Path, count: int = 2000) -> float:
    """``cryptography``'s own verify of ``token``'s signature: CPU µs, best of three loops (the
    server's figures are CPU time too). The floor under any verifier. Writes ``bare_signed.py``
    in ``work``: the bare app paying that verify on each request."""
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    from bench.bench_tokens import _private, signature_check
    from garrison.app import build_services
    from garrison.config import load_settings

    services = build_services(load_settings(env))
    try:
        services.keyring.load()
        public, alg = _private(services.keyring).public_key(), services.keyring.alg
    finally:
        services.close()
    pem = work / "public.pem"
    pem.write_bytes(public.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
    root = str(Path(__file__).resolve().parents[1])
    app = BARE_SIGNED_ASGI % {"root": root, "pem": str(pem), "alg": alg, "token": token}
    (work / "bare_signed.py").write_text(app)
    verify = signature_check(public, alg, token)
    best = float("inf")
    for _ in range(3):
        start = time.process_time()
        for _ in range(count):
            verify()
        best = min(best, time.process_time() - start)
    return best / count * 1e6


@dataclass(frozen=True)
class Run:
    name: str
    url: str
    pid: int
    floor: str  # the run it is compared with, in the same round
    headers: dict[str, str] | None = None
    script: Path | None = None


@dataclass(frozen=True)
class Goal:
    text: str
    value: float
    limit: float
    at_most: bool  # True: value <= limit is met

    @property
    def met(self) -> bool:
        return self.value <= self.limit if self.at_most else self.value >= self.limit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=5, help="seconds per run and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument(
        "--new-duration", type=int, default=2, help="seconds of the verify-new run, each round"
    )
    parser.add_argument(
        "--tokens",
        type=int,
        default=0,
        help=f"tokens to issue for verify-new (default: rounds x new-duration x {NEW_RATE_BOUND})",
    )
    parser.add_argument("--server", choices=SERVERS, default="granian", help="HTTP server")
    args = parser.parse_args()
    for tool in ("wrk", "nginx"):
        if not (shutil.which(tool) or Path(f"/usr/sbin/{tool}").exists()):
            sys.exit(f"{tool} is not installed: apt-get install -y {tool}")
    if (
        not 1 <= args.rounds <= 20
        or not 1 <= args.duration <= 60
        or not 1 <= args.new_duration <= 60
    ):
        sys.exit("--rounds must be 1-20, --duration and --new-duration 1-60 seconds")
    args.tokens = args.tokens or args.rounds * args.new_duration * NEW_RATE_BOUND
    work = Path(tempfile.mkdtemp(prefix="bench-verify-"))
    try:
        run(work, args)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(work: Path, args: argparse.Namespace) -> None:
    print(f"issuing {args.tokens} tokens ...", file=sys.stderr)
    env, token, token_file = prepare(work, args.tokens)
    raw_us = raw_verify_us(env, token, work)
    verify_headers = {
        "Authorization": f"Bearer {token}",
        "X-Original-Method": "POST",
        "X-Original-URI": "/api/tickets/7",
    }
    # each round walks its own slice of the tokens: none is seen in two rounds
    issued = token_file.read_text().split()
    per_round = len(issued) // args.rounds
    slices = []
    for number in range(args.rounds):
        part = work / f"tokens-{number}.txt"
        part.write_text("\n".join(issued[number * per_round : (number + 1) * per_round]) + "\n")
        slices.append(work / f"cycle-{number}.lua")
        slices[-1].write_text(CYCLE_LUA % {"path": part})
    redis_url = os.environ.get("GARRISON_BENCH_REDIS", "redis://127.0.0.1:6379/0")
    bare_serve, serve = server_commands(args.server, work)
    signed_serve, _ = server_commands(args.server, work, "bare_signed")
    with contextlib.ExitStack() as stack:
        bare_port, port = free_port(), free_port()
        bare_url, url = f"http://127.0.0.1:{bare_port}", f"http://127.0.0.1:{port}"
        bare_cmd = [*bare_serve, str(bare_port)]
        bare_pid = stack.enter_context(process(bare_cmd, env, bare_url, work / "bare.log"))
        signed_port = free_port()
        signed_url = f"http://127.0.0.1:{signed_port}"
        signed_pid = stack.enter_context(
            process([*signed_serve, str(signed_port)], env, signed_url, work / "signed.log")
        )
        pid = stack.enter_context(
            process([*serve, str(port)], env, f"{url}/healthz", work / "garrison.log")
        )
        noop_url, _ = stack.enter_context(nginx_in_front(bare_port, work))
        front_url, _ = stack.enter_context(nginx_in_front(port, work))
        bearer = {"Authorization": verify_headers["Authorization"]}
        runs = [
            Run("bare", f"{bare_url}/verify", bare_pid, "bare", verify_headers),
            Run("verify", f"{url}/verify", pid, "bare", verify_headers),
            Run("bare-signed", f"{signed_url}/verify", signed_pid, "bare+verify", verify_headers),
            Run("verify-new", f"{url}/verify", pid, "bare+verify", script=slices[0]),
            Run("nginx-noop", f"{noop_url}/api/tickets/7", bare_pid, "nginx-noop", bearer),
            Run("nginx-verify", f"{front_url}/api/tickets/7", pid, "nginx-noop", bearer),
        ]
        if redis_reachable(redis_url):
            redis_port = free_port()
            redis_base = f"http://127.0.0.1:{redis_port}"
            shared = {
                **env,
                "REDIS_URL": redis_url,
                "USE_REDIS_LIMITER": "true",
                "GARRISON_REDIS_PREFIX": f"bench-{os.getpid()}",
            }
            redis_pid = stack.enter_context(
                process(
                    [*serve, str(redis_port)],
                    shared,
                    f"{redis_base}/healthz",
                    work / "garrison-redis.log",
                )
            )
            runs.insert(
                3, Run("verify-redis", f"{redis_base}/verify", redis_pid, "bare", verify_headers)
            )
        else:
            print(f"Redis at {redis_url} unreachable: verify-redis not measured", file=sys.stderr)
        rounds: list[dict[str, Result]] = []
        for number in range(args.rounds):
            print(f"round {number + 1} of {args.rounds} ...", file=sys.stderr)
            fresh = {"script": slices[number], "warm": False, "duration": args.new_duration}
            rounds.append(
                {
                    r.name: wrk(
                        r.name,
                        r.url,
                        r.pid,
                        args,
                        headers=r.headers,
                        **(
                            fresh
                            if r.name == "verify-new"
                            else {"script": r.script, "warm": number == 0}
                        ),
                    )
                    for r in runs
                }
            )
        peak = median([one["verify"].rps for one in rounds])
        delay = work / "delay.lua"  # each connection waits delay() ms: ~connections/delay req/s
        delay.write_text(DELAY_LUA % {"ms": args.connections * 1000 / (peak / 2)})
        paced = wrk("verify@half", f"{url}/verify", pid, args, headers=verify_headers, script=delay)
    report(runs, rounds, paced, raw_us, args, per_round)


def redis_reachable(url: str) -> bool:
    import redis

    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=1)
        client.ping()
        client.close()
    except redis.RedisError:
        return False
    return True


def median(values: list[float]) -> float:
    return statistics.median(values)


def report(
    runs: list[Run],
    rounds: list[dict[str, Result]],
    paced: Result,
    raw_us: float,
    args: argparse.Namespace,
    per_round: int,
) -> None:
    def floor_cpu(one: dict[str, Result], floor: str) -> float:
        return one["bare"].cpu_us + raw_us if floor == "bare+verify" else one[floor].cpu_us

    def rps_ratio(name: str, floor: str) -> float:
        base = "bare" if floor == "bare+verify" else floor
        return median([one[name].rps / one[base].rps for one in rounds])

    def cpu_ratio(name: str, floor: str) -> float:
        return median([one[name].cpu_us / floor_cpu(one, floor) for one in rounds])

    print(
        f"\n{args.server}; wrk -t2 -c{args.connections} -d{args.duration}s on {os.cpu_count()} CPUs "
        f"(wrk shares them), {len(rounds)} interleaved rounds: medians; ratios within each round\n"
    )
    head = (
        f"{'run':<14}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'CPU µs/req':>12}{'non-2xx':>9}"
        f"{'floor':>13}{'req/s x':>9}{'CPU x':>8}"
    )
    print(head)
    print("-" * len(head))
    for r in runs:
        got = [one[r.name] for one in rounds]
        print(
            f"{r.name:<14}{median([g.rps for g in got]):>9.0f}"
            f"{median([g.p50_ms for g in got]):>9.2f}{median([g.p99_ms for g in got]):>9.2f}"
            f"{median([g.cpu_us for g in got]):>12.1f}{sum(g.non_2xx for g in got):>9}"
            f"{r.floor:>13}{rps_ratio(r.name, r.floor):>9.2f}{cpu_ratio(r.name, r.floor):>8.2f}"
        )
    print(
        f"{'verify@half':<14}{paced.rps:>9.0f}{paced.p50_ms:>9.2f}{paced.p99_ms:>9.2f}"
        f"{paced.cpu_us:>12.1f}{paced.non_2xx:>9}"
    )
    floor_new = median([one["bare"].cpu_us for one in rounds]) + raw_us
    print(
        f"\nraw signature verify (cryptography, this token's key): {raw_us:.1f} µs; "
        f"verify-new floor = bare CPU + that = {floor_new:.1f} µs"
    )
    print(
        f"bare-signed (the bare app paying that verify on each request, on the same server): "
        f"{median([one['bare-signed'].cpu_us for one in rounds]):.1f} µs, "
        f"{cpu_ratio('bare-signed', 'bare+verify'):.2f}x the verify-new floor; "
        f"verify-new is {cpu_ratio('verify-new', 'bare-signed'):.2f}x bare-signed"
    )
    sent = max(one["verify-new"].rps * args.new_duration for one in rounds)
    first_sight = min(1.0, per_round / sent)
    print(
        f"verify-new: {per_round} tokens a round, at most {sent:.0f} requests a round: "
        f"{first_sight:.0%} of its requests were a token's first sight"
        + ("" if first_sight >= 1 else " (raise --tokens: the rest were remembered answers)")
    )
    names = {r.name for r in runs}
    goals = [
        Goal("issue 8/9: verify req/s >= 65% of bare", rps_ratio("verify", "bare"), 0.65, False),
        Goal("issue 8/9: verify CPU <= 1.6x bare", cpu_ratio("verify", "bare"), 1.6, True),
        Goal("issue 12: verify req/s >= 75% of bare", rps_ratio("verify", "bare"), 0.75, False),
        Goal("issue 12: verify CPU <= 1.4x bare", cpu_ratio("verify", "bare"), 1.4, True),
        Goal(
            "issue 12: nginx-verify >= 85% of nginx-noop",
            rps_ratio("nginx-verify", "nginx-noop"),
            0.85,
            False,
        ),
        Goal(
            "issue 12: verify-new CPU <= 1.25x (bare + raw verify)",
            cpu_ratio("verify-new", "bare+verify"),
            1.25,
            True,
        ),
        Goal("issue 12: p99 at half the peak rate < 5 ms", paced.p99_ms, 5.0, True),
    ]
    if "verify-redis" in names:
        goals.insert(
            5,
            Goal(
                "issue 12: verify-redis req/s >= 70% of bare",
                rps_ratio("verify-redis", "bare"),
                0.70,
                False,
            ),
        )
    print("\ngoals:")
    for goal in goals:
        shown = (
            f"{goal.value:.2f} ms"
            if "ms" in goal.text
            else (f"{goal.value:.0%}" if "%" in goal.text else f"{goal.value:.2f}x")
        )
        print(f"  {'met ' if goal.met else 'MISS'}  {goal.text:<56}{shown:>9}")


if __name__ == "__main__":
    main()
