"""``garrison serve`` in development (A1, A2): what it prints and the issuer it serves under.

- The first-admin hint printed ``garrison users create ...`` without the ``--data-dir D`` the
  service was started with: run as printed, it created the admin in another database.
- Without ``GARRISON_ISSUER``, discovery, JWKS URL and tokens named ``http://127.0.0.1:8080``
  whatever address was served; they now follow the served address, from one setting.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shlex
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import PASSWORD
from tests.support import LiveServer, base_env, create_admin, free_port, garrison_cmd, run_cli


@contextlib.contextmanager
def _serving(args: list[str], env: dict[str, str], cwd: Path, port: int) -> Iterator[Path]:
    """``garrison <args> serve --port P`` until healthy; yields the file its output goes to."""
    log = cwd / f"serve-{port}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            garrison_cmd(*args, "serve", "--port", str(port)),
            env=env,
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            time.sleep(0.1)
        else:
            pytest.fail(f"not healthy:\n{log.read_text()}")
        yield log
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=15)


@pytest.mark.req("A1")
def test_the_first_admin_hint_names_the_data_dir_it_was_started_with(tmp_path: Path) -> None:
    data = tmp_path / "my data"  # a space: the hint must quote it
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = base_env(data)
    del env["GARRISON_DATA_DIR"]  # only --data-dir says where the data is
    port = free_port()
    with _serving(["--data-dir", str(data)], env, tmp_path, port) as log:
        output = log.read_text()
    hint = next(line.strip() for line in output.splitlines() if "users create" in line)
    assert f"--data-dir {shlex.quote(str(data))}" in hint, output
    # run exactly as printed, from another directory: the admin lands in the served database
    done = subprocess.run(
        [garrison_cmd()[0], "-m", *shlex.split(hint)],
        input=PASSWORD,
        env=env,
        cwd=elsewhere,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    listed = run_cli("--data-dir", str(data), "users", "list", "--json", env=env)
    assert "admin" in listed.stdout, listed.stdout + listed.stderr
    assert not (elsewhere / ".garrison").exists()


@pytest.mark.req("A2", "A3")
def test_without_an_issuer_discovery_and_tokens_follow_the_served_address(
    tmp_path: Path,
) -> None:
    env = base_env(tmp_path / "data")
    create_admin(env, PASSWORD)
    with LiveServer(env) as server:
        assert server.port != 8080
        doc = httpx.get(f"{server.url}/.well-known/openid-configuration", timeout=5).json()
        jwks = httpx.get(doc["jwks_uri"], timeout=5)
        login = httpx.post(
            doc["token_endpoint"], json={"username": "root", "password": PASSWORD}, timeout=10
        )
        token = login.json()["access_token"]
        me = httpx.get(
            doc["userinfo_endpoint"], headers={"Authorization": f"Bearer {token}"}, timeout=5
        )
    assert doc["issuer"] == server.url
    assert doc["jwks_uri"] == f"{server.url}/.well-known/jwks.json"
    assert jwks.status_code == 200
    payload = token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert claims["iss"] == doc["issuer"]
    assert me.status_code == 200, me.text
