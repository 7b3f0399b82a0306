"""The HTTP server: granian, whose workers each build their own services from the environment.

Why granian (``bench/bench_verify.py --server``): it parses requests and writes responses in Rust,
so a header in or out costs a few hundred nanoseconds instead of the microsecond each costs in a
pure-Python protocol, and the HTTP work runs beside the Python thread instead of on it. With the
bare app on each server, ``/verify`` comes closer to its floor on granian, and answers more
requests per second for the same CPU, than on uvicorn.

Two of granian's defaults are not Garrison's, and are changed here:

- SIGHUP makes granian respawn its workers. Garrison's SIGHUP reloads the policies in place: a
  policy that does not compile is refused and audited while the running one stays (Z3), where a
  respawn would start workers that refuse to start. The supervisor forwards SIGHUP to its workers.
- A worker outlives its supervisor when the supervisor is killed (SIGKILL, OOM killer), still
  holding the port. Each worker asks the kernel for SIGTERM when its parent dies, so a killed
  replica is gone, and its worker stops as gracefully as on any SIGTERM (audit records flushed).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import multiprocessing
import os
import signal
import sys
from pathlib import Path
from typing import Any

from granian.constants import HTTPModes, Interfaces
from granian.log import LogLevels
from granian.server.mp import MPServer
from starlette.types import ASGIApp

from garrison.app import build_services
from garrison.config import load_settings
from garrison.gateway.asgi import create_app
from garrison.observability.logging import logging_config

#: Allocations between young-generation collections. A request allocates a few hundred short-lived
#: objects; CPython's default (700) runs a collection every couple of requests on the hot path.
GC_YOUNG_THRESHOLD = 20_000
#: ``prctl(2)`` option: the signal a process gets when its parent exits.
_PR_SET_PDEATHSIG = 1
FACTORY = "garrison.gateway.server:factory"


def factory() -> ASGIApp:
    die_with_parent()
    settings = load_settings(os.environ)
    app = create_app(build_services(settings))
    tune_gc()
    return app


def tune_gc() -> None:
    """Move everything built at start-up out of the collector's sight (it lives as long as the
    process), and collect young objects less often. Reference counting still frees almost every
    request's garbage at once; the collector is only for cycles."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)


def die_with_parent() -> None:
    """SIGTERM to this worker when the supervisor that spawned it exits, however it exits
    (Linux; elsewhere the process manager's group kill is the only guard)."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() == 1:  # the parent died before the request above was made
        os.kill(os.getpid(), signal.SIGTERM)


class _Server(MPServer):  # process workers (the supervisor granian picks on a GIL build)
    def signal_handler_reload(self, *_args: Any, **_kwargs: Any) -> None:
        """Forward SIGHUP to every worker, whose policy watch reloads in place (and audits it)."""
        for child in multiprocessing.active_children():
            if child.pid is not None:
                os.kill(child.pid, signal.SIGHUP)


def run(
    host: str,
    port: int,
    *,
    workers: int,
    log_level: str,
    target: str = FACTORY,
    factory: bool = True,
    working_dir: Path | None = None,
) -> None:
    """Serve Garrison until SIGINT or SIGTERM (graceful: each worker's shutdown drains its audit
    writer). HTTP/1.1 only: what the supported proxies speak to a forward-auth endpoint.

    ``target`` (a module in ``working_dir``, ``factory`` or not) serves another ASGI app with the
    same options: the benchmarks' floors run on exactly the server Garrison runs on."""
    _Server(
        target,
        address=host,
        port=port,
        interface=Interfaces.ASGI,
        factory=factory,
        working_dir=working_dir,
        workers=workers,
        http=HTTPModes.http1,
        websockets=False,
        log_level=LogLevels(log_level.lower()),
        log_dictconfig=logging_config(log_level),  # JSON lines with request ids (L9)
        log_access=False,
    ).serve()
