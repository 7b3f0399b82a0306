"""Scale figures (issue 12 item 3): workers, two replicas behind nginx, a load curve, a global limit.

    uv run python bench/bench_scale.py [--duration 5] [--rounds 3] [--out bench/results] [--json]

Takes under four minutes with the defaults (on a busy 2-CPU machine).

Needs ``wrk``, ``nginx`` and the local Redis (``GARRISON_BENCH_REDIS``, default
``redis://127.0.0.1:6379/0``). Every Garrison server shares one SQLite data dir (the bench user and
keys made by ``bench_verify.prepare``), the same ``GARRISON_ISSUER``, and Redis for the limits
(``USE_REDIS_LIMITER=true``, a ``GARRISON_REDIS_PREFIX`` of this run's own), as replicas would:

  workers-1    ``garrison serve --workers 1``, /verify directly (replica A)
  workers-2    ``garrison serve --workers 2``, /verify directly (a third server)
  nginx-one    nginx ``auth_request`` to replica A only, then a static file
  nginx-pair   nginx ``auth_request`` to an upstream of replicas A and B, then a static file

The four runs are interleaved over ``--rounds`` rounds and the medians printed. Server CPU per
request is utime+stime of every process of the server(s) (the granian supervisor and the workers
it forks, found by walking /proc's parent links) before and after the run, divided by wrk's
request count (req/s x duration); nginx's CPU is shown on its own. Then a curve: wrk with a Lua
``delay()`` per connection (as many as for the peak) offers 10%..120% of each target's
measured peak in six steps, against
replica A directly and against the pair behind nginx, steps and targets interleaved, medians of
``--curve-rounds``; achieved req/s and p99 go to ``scale.json`` and ``scale.png`` in ``--out``.
wrk is closed-loop (wrk2 is not installed): a slow answer delays that connection's next request,
so p99 under overload is understated (coordinated omission).

Last, the global rate limit across two replicas: two fresh replicas with
``GARRISON_RATE_LIMIT_PER_WINDOW`` per ``GARRISON_RATE_LIMIT_WINDOW_SEC`` (default 2000 per 10 s,
per identity), one wrk each, directly (not via nginx, so each takes its share), for less than one
window; a wrk Lua script counts the 200s exactly. Printed: admitted, what Redis granted,
|admitted - limit| / limit and whether it is within 2%. Between trials the bench waits for the
window to end.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import redis

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from bench.bench_verify import (
    DELAY_LUA,
    free_port,
    nginx_in_front,
    prepare,
    process,
    redis_reachable,
    tree_cpu,
    wrk,
)

CURVE_STEPS = (0.1, 0.3, 0.5, 0.7, 0.9, 1.2)
ALLOWED_ERROR = 0.02
# Counts each answer's status per wrk thread; done() writes "ok limited other requests" to a file.
COUNT_LUA = """
local threads = {}
function setup(thread)
  table.insert(threads, thread)
end
function init(args)
  ok, limited, other = 0, 0, 0
end
function response(status, headers, body)
  if status == 200 then ok = ok + 1
  elseif status == 429 then limited = limited + 1
  else other = other + 1 end
end
function done(summary, latency, requests)
  local a, b, c = 0, 0, 0
  for _, t in ipairs(threads) do
    a = a + t:get("ok"); b = b + t:get("limited"); c = c + t:get("other")
  end
  local f = io.open("%(path)s", "w")
  f:write(string.format("%%d %%d %%d %%d\\n", a, b, c, summary.requests))
  f:close()
end
"""


# ---------------------------------------------------------------- measurements


@dataclass
class Sample:
    name: str
    offered: float | None  # req/s the delay() script offers; None: as fast as it goes
    rps: float
    p50_ms: float
    p99_ms: float
    cpu_us: float  # Garrison's CPU per request, every process of every server in the run
    proxy_cpu_us: float | None  # nginx's, where it is in front
    non_2xx: int


@dataclass(frozen=True)
class Target:
    name: str
    url: str
    servers: tuple[int, ...]  # Garrison server pids (trees)
    proxy: int | None = None  # nginx pid


def measure(
    target: Target,
    args: argparse.Namespace,
    headers: dict[str, str],
    *,
    script: Path | None = None,
    offered: float | None = None,
    warm: bool = False,
) -> Sample:
    if warm:  # as bench_verify's wrk(warm=True), but outside the CPU reading
        short = argparse.Namespace(duration=2, connections=args.connections)
        wrk(target.name, target.url, target.servers[0], short, headers=headers, script=script)
    proxy = [target.proxy] if target.proxy is not None else []
    before, proxy_before = tree_cpu(target.servers), tree_cpu(proxy)
    got = wrk(
        target.name, target.url, target.servers[0], args, headers=headers, script=script, warm=False
    )
    used, proxy_used = tree_cpu(target.servers) - before, tree_cpu(proxy) - proxy_before
    requests = max(got.rps * args.duration, 1.0)
    return Sample(
        target.name,
        offered,
        got.rps,
        got.p50_ms,
        got.p99_ms,
        used / requests * 1e6,
        proxy_used / requests * 1e6 if proxy else None,
        got.non_2xx,
    )


def median_sample(samples: list[Sample]) -> Sample:
    def med(values: list[float]) -> float:
        return statistics.median(values)

    proxy = [s.proxy_cpu_us for s in samples if s.proxy_cpu_us is not None]
    return Sample(
        samples[0].name,
        samples[0].offered,
        med([s.rps for s in samples]),
        med([s.p50_ms for s in samples]),
        med([s.p99_ms for s in samples]),
        med([s.cpu_us for s in samples]),
        med(proxy) if proxy else None,
        sum(s.non_2xx for s in samples),
    )


def curves(
    targets: dict[str, tuple[Target, float, dict[str, str]]],
    args: argparse.Namespace,
    work: Path,
) -> dict[str, list[Sample]]:
    """Per curve (a target, its measured peak, its headers), one run per step of ``CURVE_STEPS`` x
    peak: each connection waits ``delay()`` ms between requests, so ``connections`` offer at most
    connections x 1000 / delay req/s, less by latency / (delay + latency): wrk waits for the
    answer, then the delay. (More connections with longer delays would shrink that, but on this
    server 256 connections cost more CPU per request than 64 and give less req/s.) Steps and
    curves interleaved, ``--curve-rounds`` times; the
    medians per step are kept."""
    runs: dict[tuple[str, float], list[Sample]] = {}
    args = argparse.Namespace(**{**vars(args), "connections": args.curve_connections})
    for number in range(args.curve_rounds):
        for fraction in CURVE_STEPS:
            print(
                f"  curve round {number + 1} of {args.curve_rounds}: {fraction:.0%} of the peak",
                file=sys.stderr,
            )
            for name, (target, peak, headers) in targets.items():
                offered = peak * fraction
                script = work / f"delay-{target.name}-{fraction}.lua"
                script.write_text(DELAY_LUA % {"ms": args.connections * 1000 / offered})
                runs.setdefault((name, fraction), []).append(
                    measure(target, args, headers, script=script, offered=offered)
                )
    return {
        name: [median_sample(runs[name, fraction]) for fraction in CURVE_STEPS] for name in targets
    }


def nginx_pair(
    port_a: int, port_b: int, work: Path
) -> contextlib.AbstractContextManager[tuple[str, int]]:
    """bench_verify's nginx (auth_request to /verify), with both replicas in its upstream."""
    return nginx_in_front(port_a, work, port_b)


# ---------------------------------------------------------------- the global limit


@dataclass
class LimitTrial:
    admitted: int  # 200s counted by wrk, both replicas
    limited: int  # 429s
    other: int  # any other status
    requests: int  # every answer counted
    per_replica: list[int]  # 200s each replica gave
    requests_per_replica: list[int]  # answers each replica gave
    granted: int  # the shared window's count in Redis: units handed out as leases
    error: float  # |admitted - limit| / limit


def count_status(url: str, pid: int, args: argparse.Namespace, token: str, path: Path) -> None:
    script = path.with_suffix(".lua")
    script.write_text(COUNT_LUA % {"path": path})
    headers = {
        "Authorization": f"Bearer {token}",
        "X-Original-Method": "POST",
        "X-Original-URI": "/api/tickets/7",
    }
    wrk("limit", url, pid, args, headers=headers, script=script, warm=False)


def limit_trials(
    stack: contextlib.ExitStack,
    env: dict[str, str],
    token: str,
    args: argparse.Namespace,
    work: Path,
    client: redis.Redis,
) -> list[LimitTrial]:
    """``env`` names the shared Redis (``REDIS_URL``, ``USE_REDIS_LIMITER``)."""
    prefix = f"bench-scale-limit-{os.getpid()}"
    limited_env = {
        **env,
        "GARRISON_RATE_LIMIT_PER_WINDOW": str(args.limit),
        "GARRISON_RATE_LIMIT_WINDOW_SEC": str(args.window),
        "GARRISON_REDIS_PREFIX": prefix,
    }
    replicas = []
    for name in ("a", "b"):
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        pid = stack.enter_context(
            process(
                [sys.executable, "-m", "garrison", "serve", "--port", str(port)],
                limited_env,
                f"{url}/healthz",
                work / f"garrison-limit-{name}.log",
            )
        )
        replicas.append((f"{url}/verify", pid))
    # less than one window: the whole flood lands in the window its first grant opens
    run_args = argparse.Namespace(
        duration=max(1, min(args.duration, args.window // 2)), connections=args.connections
    )
    trials = []
    for number in range(args.limit_trials):
        print(f"global limit, trial {number + 1} of {args.limit_trials} ...", file=sys.stderr)
        files = [work / f"limit-{number}-{i}.txt" for i in range(2)]
        with ThreadPoolExecutor(2) as pool:
            runs = [
                pool.submit(count_status, url, pid, run_args, token, out)
                for (url, pid), out in zip(replicas, files, strict=True)
            ]
            for one in runs:
                one.result()
        counts = [[int(v) for v in f.read_text().split()] for f in files]
        keys = list(client.scan_iter(match=f"{prefix}:rl:default:identity:*"))
        granted = sum(int(client.get(k) or 0) for k in keys)
        admitted = sum(c[0] for c in counts)
        if granted == 0:
            raise RuntimeError("the replicas did not spend the shared window in Redis")
        trials.append(
            LimitTrial(
                admitted=admitted,
                limited=sum(c[1] for c in counts),
                other=sum(c[2] for c in counts),
                requests=sum(c[3] for c in counts),
                per_replica=[c[0] for c in counts],
                requests_per_replica=[c[3] for c in counts],
                granted=granted,
                error=abs(admitted - args.limit) / args.limit,
            )
        )
        if number + 1 < args.limit_trials:  # let the window (and the replicas' leases) end
            deadline = time.monotonic() + args.window + 5
            while keys and client.exists(*keys) and time.monotonic() < deadline:
                time.sleep(0.2)
            time.sleep(1.0)
    for key in client.scan_iter(match=f"{prefix}:*"):
        client.delete(key)
    return trials


# ---------------------------------------------------------------- the run


@dataclass
class Machine:
    cpus: int
    loadavg_before: tuple[float, float, float]
    loadavg_after: tuple[float, float, float]
    seconds: float
    note: str = "shared machine: other sessions' tests and builds run alongside; noisy"


@dataclass
class LimitResult:
    limit: int
    window_s: int
    trials: list[LimitTrial]
    worst_error: float
    within_2pct: bool
    over_admitted: bool


@dataclass
class Report:
    machine: Machine
    settings: dict[str, object]
    runs: list[Sample]
    rounds: list[list[Sample]]
    curves: dict[str, list[Sample]]
    limit: LimitResult
    notes: list[str] = field(default_factory=list)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=5, help="seconds per run")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of the 4 runs")
    parser.add_argument("--curve-rounds", type=int, default=1, help="rounds of the load curve")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument(
        "--curve-connections", type=int, help="connections of the curve (default: --connections)"
    )
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--json", action="store_true", help="print the report as JSON only")
    parser.add_argument("--limit", type=int, default=2000, help="global limit per window")
    parser.add_argument("--window", type=int, default=10, help="the limit's window, seconds")
    parser.add_argument("--limit-trials", type=int, default=3)
    args = parser.parse_args()
    args.curve_connections = args.curve_connections or args.connections
    for tool in ("wrk", "nginx"):
        if not (shutil.which(tool) or Path(f"/usr/sbin/{tool}").exists()):
            sys.exit(f"{tool} is not installed: apt-get install -y {tool}")
    if not 1 <= args.rounds <= 20 or not 1 <= args.duration <= 60:
        sys.exit("--rounds must be 1-20 and --duration 1-60 seconds")
    if not 10 <= args.limit <= 1_000_000 or not 4 <= args.window <= 120:
        sys.exit("--limit must be 10-1000000 and --window 4-120 seconds")
    if not 1 <= args.connections <= 1000 or not 1 <= args.curve_connections <= 1000:
        sys.exit("--connections and --curve-connections must be 1-1000")
    if not 1 <= args.limit_trials <= 10 or not 1 <= args.curve_rounds <= 10:
        sys.exit("--limit-trials and --curve-rounds must be 1-10")
    redis_url = os.environ.get("GARRISON_BENCH_REDIS", "redis://127.0.0.1:6379/0")
    if not redis_reachable(redis_url):
        sys.exit(f"Redis at {redis_url} is unreachable (GARRISON_BENCH_REDIS names another)")
    work = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    try:
        report = run(work, args, redis_url)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    args.out.mkdir(parents=True, exist_ok=True)
    data = asdict(report)
    (args.out / "scale.json").write_text(json.dumps(data, indent=2) + "\n")
    plot(report, args.out / "scale.png")
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        show(report)
        print(f"\nwrote {args.out / 'scale.json'} and {args.out / 'scale.png'}")


def run(work: Path, args: argparse.Namespace, redis_url: str) -> Report:
    load_before = os.getloadavg()
    started = time.monotonic()
    env, token, _ = prepare(work, 1)
    shared = {
        **env,
        "REDIS_URL": redis_url,
        "USE_REDIS_LIMITER": "true",
        "GARRISON_REDIS_PREFIX": f"bench-scale-{os.getpid()}",
    }
    headers = {
        "Authorization": f"Bearer {token}",
        "X-Original-Method": "POST",
        "X-Original-URI": "/api/tickets/7",
    }
    bearer = {"Authorization": headers["Authorization"]}
    client = redis.Redis.from_url(redis_url)

    def serve(stack: contextlib.ExitStack, name: str, workers: int) -> tuple[str, int, int]:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        cmd = [sys.executable, "-m", "garrison", "serve", "--port", str(port)]
        cmd += ["--workers", str(workers)]
        pid = stack.enter_context(process(cmd, shared, f"{url}/healthz", work / f"{name}.log"))
        return url, port, pid

    with contextlib.ExitStack() as stack:
        stack.callback(client.close)
        stack.callback(_drop_keys, client, shared["GARRISON_REDIS_PREFIX"])
        url_a, port_a, pid_a = serve(stack, "replica-a", 1)
        _, port_b, pid_b = serve(stack, "replica-b", 1)
        url_2, _, pid_2 = serve(stack, "workers-2", 2)
        one_url, one_pid = stack.enter_context(nginx_in_front(port_a, work))
        pair_url, pair_pid = stack.enter_context(nginx_pair(port_a, port_b, work))
        targets = [
            (Target("workers-1", f"{url_a}/verify", (pid_a,)), headers),
            (Target("workers-2", f"{url_2}/verify", (pid_2,)), headers),
            (Target("nginx-one", f"{one_url}/api/tickets/7", (pid_a,), one_pid), bearer),
            (
                Target("nginx-pair", f"{pair_url}/api/tickets/7", (pid_a, pid_b), pair_pid),
                bearer,
            ),
        ]
        rounds: list[list[Sample]] = []
        for number in range(args.rounds):
            print(f"round {number + 1} of {args.rounds} ...", file=sys.stderr)
            rounds.append(
                [measure(t, args, h, warm=number == 0) for t, h in targets]  # warm once each
            )
        runs = [median_sample([one[i] for one in rounds]) for i in range(len(targets))]
        by_name = {s.name: s for s in runs}
        print("load curve ...", file=sys.stderr)
        loads = curves(
            {
                "replica (direct)": (targets[0][0], by_name["workers-1"].rps, headers),
                "pair (nginx)": (targets[3][0], by_name["nginx-pair"].rps, bearer),
            },
            args,
            work,
        )
    with contextlib.ExitStack() as stack:
        limits_client = redis.Redis.from_url(redis_url)
        stack.callback(limits_client.close)
        trials = limit_trials(stack, shared, token, args, work, limits_client)
    worst = max(t.error for t in trials)
    limit = LimitResult(
        args.limit,
        args.window,
        trials,
        worst,
        worst <= ALLOWED_ERROR,
        any(t.admitted > args.limit for t in trials),
    )
    return Report(
        machine=Machine(
            os.cpu_count() or 0,
            load_before,
            os.getloadavg(),
            round(time.monotonic() - started, 1),
        ),
        settings={
            "wrk": f"-t2 -c{args.connections} -d{args.duration}s",
            "rounds": args.rounds,
            "database": "one SQLite file shared by every server",
            "limiter": "Redis (USE_REDIS_LIMITER=true), leased budgets",
            "curve_steps": list(CURVE_STEPS),
            "curve_rounds": args.curve_rounds,
            "curve_wrk": f"-t2 -c{args.curve_connections} -d{args.duration}s, delay()",
        },
        runs=runs,
        rounds=rounds,
        curves=loads,
        limit=limit,
        notes=[
            "CPU per request: utime+stime of the whole process tree / (req/s x duration)",
            "curve: wrk is closed-loop (delay() per connection); p99 under overload understated",
        ],
    )


def _drop_keys(client: redis.Redis, prefix: str) -> None:
    with contextlib.suppress(redis.RedisError):
        for key in client.scan_iter(match=f"{prefix}:*"):
            client.delete(key)


# ---------------------------------------------------------------- output


def show(report: Report) -> None:
    machine, by_name = report.machine, {s.name: s for s in report.runs}
    print(
        f"\nwrk {report.settings['wrk']} on {machine.cpus} CPUs shared with wrk, nginx and "
        f"other sessions (load {machine.loadavg_before[0]:.1f} before, "
        f"{machine.loadavg_after[0]:.1f} after): medians of {report.settings['rounds']} "
        "interleaved rounds\n"
    )
    head = (
        f"{'run':<12}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'CPU µs/req':>12}{'nginx µs':>10}"
        f"{'non-2xx':>9}{'vs':>12}{'req/s x':>9}"
    )
    print(head)
    print("-" * len(head))
    floors = {"workers-2": "workers-1", "nginx-pair": "nginx-one"}
    for s in report.runs:
        floor = floors.get(s.name)
        ratio = f"{s.rps / by_name[floor].rps:>9.2f}" if floor else ""
        proxy = f"{s.proxy_cpu_us:>10.1f}" if s.proxy_cpu_us is not None else f"{'':>10}"
        print(
            f"{s.name:<12}{s.rps:>9.0f}{s.p50_ms:>9.2f}{s.p99_ms:>9.2f}{s.cpu_us:>12.1f}{proxy}"
            f"{s.non_2xx:>9}{floor or '':>12}{ratio}"
        )
    for name, points in report.curves.items():
        print(f"\ncurve, {name}:")
        print(f"  {'offered':>9}{'achieved':>10}{'p50 ms':>9}{'p99 ms':>9}{'CPU µs/req':>12}")
        for p in points:
            print(
                f"  {p.offered or 0:>9.0f}{p.rps:>10.0f}{p.p50_ms:>9.2f}{p.p99_ms:>9.2f}"
                f"{p.cpu_us:>12.1f}"
            )
    limit = report.limit
    print(
        f"\nglobal limit {limit.limit} per {limit.window_s} s across two replicas "
        "(one wrk each, directly):"
    )
    print(f"  {'admitted':>9}{'a':>7}{'b':>7}{'granted':>9}{'429s':>9}{'other':>7}{'error':>8}")
    for t in limit.trials:
        print(
            f"  {t.admitted:>9}{t.per_replica[0]:>7}{t.per_replica[1]:>7}"
            f"{t.granted:>9}{t.limited:>9}{t.other:>7}{t.error:>8.2%}"
        )
    verdict = "met " if limit.within_2pct else "MISS"
    print(
        f"  {verdict} |admitted - limit| / limit <= 2% in every trial: worst "
        f"{limit.worst_error:.2%}{'; OVER-ADMITTED' if limit.over_admitted else ''}"
    )


def plot(report: Report, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    top = 0.0
    for name, points in report.curves.items():
        offered = [p.offered or 0.0 for p in points]
        left.plot(offered, [p.rps for p in points], marker="o", label=name)
        right.plot(offered, [p.p99_ms for p in points], marker="o", label=name)
        top = max(top, *offered)
    left.plot([0, top], [0, top], linestyle=":", color="grey", label="achieved = offered")
    left.set(
        xlabel="offered req/s (connections x 1000 / delay ms)",
        ylabel="achieved req/s",
        title="/verify throughput",
    )
    right.set(
        xlabel="offered req/s (connections x 1000 / delay ms)",
        ylabel="p99 ms (log)",
        title="/verify p99 latency",
    )
    right.set_yscale("log")
    for axis in (left, right):
        axis.grid(True, alpha=0.3)
        axis.legend()
    fig.suptitle(
        f"Garrison /verify, wrk closed-loop with delay(); {report.machine.cpus} shared CPUs, "
        f"load {report.machine.loadavg_before[0]:.1f} at start (noisy)",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
