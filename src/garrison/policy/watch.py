"""Policies reload without a restart: on SIGHUP, and by watching the policy files.

A daemon thread checks the files' fingerprint (a few ``stat`` calls) every ``interval`` seconds, or
at once when SIGHUP arrives; ``Authorizer.reload`` swaps in the new bundle only if it validates.
The request path never touches the disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
from collections.abc import Callable

from garrison.audit.event import AuditEvent, AuditSink
from garrison.policy.authorizer import Authorizer

log = logging.getLogger("garrison.policy")


class PolicyWatcher:
    def __init__(
        self, authorizer: Authorizer, interval: float = 2.0, audit: AuditSink | None = None
    ) -> None:
        self.authorizer = authorizer
        self.interval = interval
        self.audit = audit
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="garrison-policy-watch", daemon=True)

    def start(self) -> PolicyWatcher:
        self._thread.start()
        return self

    def poke(self) -> None:
        """Check now (the SIGHUP handler)."""
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.interval)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.check()
            except Exception:  # the watcher must outlive any surprise
                log.exception("policy reload check failed")

    def check(self) -> None:
        """Reload if the files changed; a new version and a refused edit are both audited (L2)."""
        before, error_before = self.authorizer.version, self.authorizer.last_reload_error
        changed = self.authorizer.reload()
        error = self.authorizer.last_reload_error
        if self.audit is None:
            return
        if changed:
            event = AuditEvent(
                action="config.policy.reload",
                outcome="success",
                actor="system",
                details={"from": before, "to": self.authorizer.version},
            )
        elif error is not None and error != error_before:
            event = AuditEvent(
                action="config.policy.reload",
                outcome="failure",
                actor="system",
                reason="policy files do not validate; the running version stays",
                details={"version": before, "error": error[:400]},
            )
        else:
            return
        self.audit.record_sync(event)


def start_policy_watch(
    authorizer: Authorizer, interval: float = 2.0, audit: AuditSink | None = None
) -> Callable[[], None]:
    """Start watching (and SIGHUP where the running loop can take signals); returns ``stop``."""
    watcher = PolicyWatcher(authorizer, interval, audit).start()
    loop: asyncio.AbstractEventLoop | None = None
    with contextlib.suppress(RuntimeError, ValueError, NotImplementedError, AttributeError):
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGHUP, watcher.poke)

    def stop() -> None:
        if loop is not None:
            with contextlib.suppress(RuntimeError, ValueError, NotImplementedError):
                loop.remove_signal_handler(signal.SIGHUP)
        watcher.stop()

    return stop
