"""What the checks look at: the settings ``serve`` reads, the database, and (with ``--url``) HTTP.

Everything is opened lazily and at most once, so a run that never needs the database never touches
it, and an unreachable database is one FAIL (``storage.reachable``) plus SKIPs, not a dozen errors.
The doctor only reads: it never migrates, creates a key, or writes a file.

``storage_url`` lets the storage checks connect by another route than ``DATABASE_URL`` (a tunnel,
a read-only login) while the configuration checks still judge the configured ``DATABASE_URL``.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx

from garrison.clock import Clock, system_clock
from garrison.config import Settings
from garrison.doctor.model import Skip
from garrison.storage.db import Database

#: Per-request bound for live checks: a slow deployment gives a FAIL, never a hung doctor.
HTTP_TIMEOUT = httpx.Timeout(5.0, connect=3.0)
USER_AGENT = "garrison-doctor"


@dataclass
class DoctorContext:
    settings: Settings
    base_url: str | None = None
    storage_url: str | None = None
    aggressive: bool = False
    clock: Clock = system_clock
    #: where backups are kept (``--backup-dir``); else ``GARRISON_BACKUP_DIR``
    backup_dir: Path | None = None
    #: where secrets named indirectly (an external IdP's ``hs256_secret_env``) are read from
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ), repr=False)
    _db: Database | None = field(default=None, repr=False)
    _db_error: str | None = field(default=None, repr=False)
    _http: httpx.Client | None = field(default=None, repr=False)
    #: set by the first live check that could not connect; the rest then skip
    unreachable: str | None = field(default=None, repr=False)
    nonce: str = field(default_factory=lambda: secrets.token_hex(6))

    @property
    def issuer(self) -> str:
        """The issuer the deployment should name: ``GARRISON_ISSUER``; in development without
        it, the origin of ``--url`` (``garrison serve`` then issues under the address it serves)."""
        configured = self.settings.production or "issuer" in self.settings.model_fields_set
        if configured or not self.base_url:
            return self.settings.issuer
        parts = urlsplit(self.base_url)
        return f"{parts.scheme}://{parts.netloc}"

    # -- storage -------------------------------------------------------------------------------
    @property
    def database_url(self) -> str:
        return self.storage_url or self.settings.effective_database_url

    def database(self) -> Database:
        """The database, pinged once; ``Skip`` when there is none or it cannot be reached."""
        if self._db is not None:
            return self._db
        if self._db_error is not None:
            raise Skip(f"database unavailable ({self._db_error})")
        try:
            self._db = self._open()
        except Skip as exc:
            self._db_error = str(exc)
            raise
        except Exception as exc:
            self._db_error = " ".join(str(exc).split())[:300] or type(exc).__name__
            raise Skip(f"database unavailable ({self._db_error})") from None
        return self._db

    def _open(self) -> Database:
        url = self.database_url
        if url.startswith("sqlite:///"):
            path = Path(url.removeprefix("sqlite:///"))
            if not path.is_file():
                raise Skip(
                    f"no database yet at {path}; start garrison once or `garrison db upgrade`"
                )
        db = Database(_bounded(url), pool_size=1, max_overflow=0, pool_timeout=5.0)
        try:
            db.ping()
        except Exception:
            db.dispose()
            raise
        return db

    @property
    def backups(self) -> Path | None:
        return self.backup_dir or self.settings.backup_dir

    # -- HTTP ----------------------------------------------------------------------------------
    def http(self) -> httpx.Client:
        """A client for the ``--url`` deployment only; ``Skip`` without one."""
        if self.base_url is None:
            raise Skip("no --url given; pass --url to check a running deployment")
        if self._http is None:
            self._http = httpx.Client(
                base_url=self.base_url,
                timeout=HTTP_TIMEOUT,
                follow_redirects=False,
                headers={"User-Agent": USER_AGENT},
                trust_env=False,  # only the URL given: no proxy from the environment
            )
        return self._http

    @property
    def https(self) -> bool:
        return (self.base_url or "").lower().startswith("https://")

    def close(self) -> None:
        if self._db is not None:
            self._db.dispose()
        if self._http is not None:
            self._http.close()


def _bounded(url: str) -> str:
    """A PostgreSQL URL with a connect timeout (libpq waits forever by default)."""
    parts = urlsplit(url)
    if not parts.scheme.startswith("postgres"):
        return url
    query = parse_qsl(parts.query, keep_blank_values=True)
    if not any(key == "connect_timeout" for key, _ in query):
        query.append(("connect_timeout", "5"))
    return urlunsplit(parts._replace(query=urlencode(query)))
