"""``garrison serve``'s process model: a granian supervisor and its worker(s).

Two of granian's defaults would be wrong for Garrison, and each has its attack here:

- a supervisor killed with SIGKILL (OOM killer, ``kill -9``) left its worker serving, holding the
  port: a "dead" replica still answered, on code and keys nobody could reload or stop by its pid;
- SIGHUP respawned the workers, so a policy file with a syntax error took the service down at the
  next ``systemctl reload`` instead of being refused while the running policy stays (Z3).
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import httpx
import pytest

from tests.support import LiveServer, base_env, run_cli


def _children(pid: int) -> list[int]:
    """The live processes whose parent is ``pid``."""
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                stat = Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(stat[1]) == pid and stat[0] != "Z":
                found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.req("L1")
def test_a_killed_supervisor_takes_its_worker_with_it(tmp_path: Path) -> None:
    server = LiveServer(base_env(tmp_path / "data")).start()
    try:
        assert server.proc is not None
        workers = _children(server.proc.pid)
        assert len(workers) == 1, workers
        os.kill(server.proc.pid, signal.SIGKILL)  # the supervisor only, as the OOM killer would
        server.proc.wait(timeout=5)
        deadline = time.monotonic() + 5
        while _alive(workers[0]) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(workers[0]), "the worker outlived its supervisor"
        with pytest.raises(httpx.ConnectError):  # nothing answers on the replica's port
            httpx.get(f"{server.url}/healthz", timeout=1)
        # it stopped as on any SIGTERM: gracefully, the lifespan's shutdown run
        assert "Stopping worker-1" in server.log() or "Stopped worker-1" in server.log()
    finally:
        server.stop(signal.SIGKILL)


@pytest.mark.req("Z3", "Z4")
def test_sighup_reloads_the_policy_in_place_and_refuses_a_broken_one(tmp_path: Path) -> None:
    policies = tmp_path / "policies"  # the operator's own, beside Garrison's base policies
    policies.mkdir()
    env = base_env(tmp_path / "data", GARRISON_POLICY_DIR=str(policies))
    reader = base_env(tmp_path / "data")  # the CLI, too, refuses to start on a broken policy
    with LiveServer(env) as server:
        assert server.proc is not None
        workers = _children(server.proc.pid)
        (policies / "zz_broken.cedar").write_text("permit (principal, action, resource) when {")
        os.kill(server.proc.pid, signal.SIGHUP)  # what `systemctl reload` sends: the supervisor
        deadline = time.monotonic() + 10
        refused: list[dict[str, object]] = []
        while not refused and time.monotonic() < deadline:
            time.sleep(0.2)
            query = run_cli(
                "audit", "query", "--action", "config.policy.reload", "--json", env=reader
            )
            assert query.returncode == 0, query.stderr
            refused = [r for r in json.loads(query.stdout) if r["outcome"] == "failure"]
        assert refused, "the broken policy was not refused"
        # the same worker still serves, on the policy it had: no respawn, no outage
        assert _children(server.proc.pid) == workers
        assert httpx.get(f"{server.url}/healthz", timeout=2).status_code == 200
        answer = httpx.get(
            f"{server.url}/verify",
            headers={"X-Original-Method": "GET", "X-Original-URI": "/api/x"},
            timeout=2,
        )
        assert answer.status_code == 401  # decided, not a 5xx from a worker that failed to start
