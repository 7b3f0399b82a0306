"""Fixtures of the fault suite: a Garrison environment on a fresh PostgreSQL database."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support import base_env

#: ``/verify`` is asked about ``/api/tickets/*`` (action ``ticket.comment``: role support).
ROUTES = """
[[routes]]
prefix = "/api/tickets"
action = "ticket.comment"
"""

MakeEnv = Callable[..., dict[str, str]]


@pytest.fixture
def make_env(tmp_path: Path) -> MakeEnv:
    """The environment of a ``garrison serve`` replica (and of the CLI) on ``database_url``."""

    def make(database_url: str, **extra: str) -> dict[str, str]:
        config = tmp_path / "garrison.toml"
        config.write_text(ROUTES)
        return base_env(
            tmp_path / "data",
            DATABASE_URL=database_url,
            GARRISON_CONFIG=str(config),
            GARRISON_METRICS_PUBLIC="true",
            GARRISON_LOG_LEVEL="WARNING",
            # replicas behind one address share an issuer (without it, each would name its own)
            GARRISON_ISSUER="http://127.0.0.1:8080",
            **extra,
        )

    return make
