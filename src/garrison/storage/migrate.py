"""Schema migrations (O2): explicit in production, automatic only in development.

``upgrade`` applies pending Alembic revisions; ``check`` lists pending revisions and any drift between
the live schema and ``schema.metadata`` (what `garrison db check` reports, exit 1 when non-empty).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from garrison.storage.db import Database
from garrison.storage.schema import metadata

_HERE = Path(__file__).parent / "migrations"


def _config(db: Database) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(_HERE))
    return cfg


def head_revision(db: Database) -> str | None:
    return ScriptDirectory.from_config(_config(db)).get_current_head()


def current_revision(db: Database) -> str | None:
    with db.engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def pending_revisions(db: Database) -> list[str]:
    script = ScriptDirectory.from_config(_config(db))
    current = current_revision(db)
    return [rev.revision for rev in script.iterate_revisions(script.get_current_head(), current)][
        ::-1
    ]


def upgrade(db: Database, progress: Callable[[str], None] | None = None) -> list[str]:
    """Apply every pending revision in order; returns the revisions applied."""
    todo = pending_revisions(db)
    cfg = _config(db)
    for rev in todo:
        if progress:
            progress(rev)
        with db.engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, rev)
    return todo


def check(db: Database) -> list[str]:
    """Problems between the live database and the code: pending revisions, then schema drift."""
    problems = [f"pending migration {rev}" for rev in pending_revisions(db)]
    if problems:
        return problems
    with db.engine.connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn), metadata)
    return [f"schema drift: {_describe(diff)}" for diff in diffs]


def _describe(diff: object) -> str:
    if isinstance(diff, tuple) and diff:
        op = diff[0]
        target = diff[-1] if len(diff) > 1 else ""
        name = getattr(target, "name", None) or getattr(diff[1], "name", None) or repr(target)
        return f"{op} {name}"
    if isinstance(diff, list) and diff:
        return _describe(diff[0])
    return repr(diff)


def autogenerate(db: Database, message: str) -> None:
    """Developer helper: write a new revision from the difference to ``schema.metadata``."""
    cfg = _config(db)
    with db.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.revision(cfg, message=message, autogenerate=True)
