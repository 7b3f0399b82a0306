"""Least-privilege PostgreSQL roles (T4): migrator, app_rw, app_ro; and the runtime's self-check.

- **migrator** owns the tables and runs ``garrison db upgrade``. As owner it is not subject to row
  security (policies are enabled, not forced), which migrations need.
- **app_rw** is what the service connects as: read and write rows, no DDL, not an owner, not a
  superuser, no BYPASSRLS, so every tenant-scoped table is filtered by ``garrison.tenant``. The audit
  tables are append-only for it: INSERT and SELECT, no UPDATE, DELETE or TRUNCATE (L7). Retention
  (``garrison audit prune``) deletes as the migrator.
- **app_ro** reads (reports, ``audit query``), also under row security.

``role_sql`` is the SQL ``garrison db roles`` runs (or prints with ``--dry-run``): idempotent, and
right on its first run whether the tables exist yet or not. On an empty database the migrator's
default privileges grant the tables ``garrison db upgrade`` creates later; those would include
UPDATE and DELETE on the audit tables, so revision 0003 takes them back and adds a trigger that
refuses both to every role but the owner (``storage/migrations/versions/0003_*``). Run it again
after a migration run by anyone but the migrator, to hand the new tables to the migrator.

Passwords come from settings (``GARRISON_DB_MIGRATOR_PASSWORD``, ``GARRISON_DB_APP_RW_PASSWORD``,
``GARRISON_DB_APP_RO_PASSWORD``); they are hashed here (SCRAM-SHA-256, by libpq) so that neither
the statement the server sees, nor its log, nor anything printed holds the password. A role whose
setting is unset keeps the password it has.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

import psycopg
import sqlalchemy as sa
from psycopg import sql

from garrison.errors import ConfigError, GarrisonError, ValidationError
from garrison.storage.db import Database
from garrison.storage.schema import TENANT_TABLES

_ROLE_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
#: Tables whose history the service may append to but never rewrite (L7). A migration that adds one
#: must also take back UPDATE/DELETE/TRUNCATE and add the trigger, as 0003 does.
APPEND_ONLY_TABLES: tuple[str, ...] = ("audit_log", "audit_checkpoints", "audit_epochs")


@dataclass(frozen=True, slots=True)
class RoleNames:
    migrator: str = "garrison_migrator"
    app_rw: str = "garrison_app_rw"
    app_ro: str = "garrison_app_ro"

    def __post_init__(self) -> None:
        for name in (self.migrator, self.app_rw, self.app_ro):
            if not _ROLE_RE.match(name):
                raise ValidationError(f"role name {name!r}: lower-case letters, digits, '_' only")
        if len({self.migrator, self.app_rw, self.app_ro}) != 3:
            raise ValidationError("the three role names must differ")


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _create(name: str) -> str:
    attrs = "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS"
    return (
        f"DO $$ BEGIN\n"
        f"  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{name}') THEN\n"
        f"    CREATE ROLE {_q(name)} {attrs};\n"
        f"  ELSE\n"
        f"    ALTER ROLE {_q(name)} {attrs};\n"
        f"  END IF;\n"
        f"END $$"
    )


def role_sql(names: RoleNames, database: str, schema: str = "public") -> list[str]:
    """The statements, in order; role names are validated, so quoting them is enough."""
    if not _ROLE_RE.match(schema):
        raise ValidationError(f"schema name {schema!r}: lower-case letters, digits, '_' only")
    m, rw, ro, s = _q(names.migrator), _q(names.app_rw), _q(names.app_ro), _q(schema)
    statements = [_create(n) for n in (names.migrator, names.app_rw, names.app_ro)]
    statements += [
        f"REVOKE ALL ON DATABASE {_q(database)} FROM PUBLIC",
        f"GRANT CONNECT, TEMPORARY ON DATABASE {_q(database)} TO {m}, {rw}, {ro}",
        f"REVOKE CREATE ON SCHEMA {s} FROM PUBLIC",
        f"GRANT USAGE, CREATE ON SCHEMA {s} TO {m}",
        f"GRANT USAGE ON SCHEMA {s} TO {rw}, {ro}",
        # existing tables and sequences move to the migrator
        _reassign_owner(names.migrator, schema),
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {s} TO {rw}",
        f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {s} TO {rw}",
        f"GRANT SELECT ON ALL TABLES IN SCHEMA {s} TO {ro}",
        # tables the migrator creates later get the same grants
        f"ALTER DEFAULT PRIVILEGES FOR ROLE {m} IN SCHEMA {s} "
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {rw}",
        f"ALTER DEFAULT PRIVILEGES FOR ROLE {m} IN SCHEMA {s} "
        f"GRANT USAGE, SELECT ON SEQUENCES TO {rw}",
        f"ALTER DEFAULT PRIVILEGES FOR ROLE {m} IN SCHEMA {s} GRANT SELECT ON TABLES TO {ro}",
    ]
    statements += [_append_only(t, schema, rw, ro) for t in APPEND_ONLY_TABLES]
    return statements


def _reassign_owner(owner: str, schema: str) -> str:
    # both names passed _ROLE_RE (role_sql checks the schema name), so they are plain identifiers
    return (
        "DO $$ DECLARE r record; BEGIN\n"  # noqa: S608
        "  FOR r IN SELECT c.relname FROM pg_class c\n"
        "    JOIN pg_namespace n ON n.oid = c.relnamespace\n"
        f"    WHERE n.nspname = '{schema}' AND c.relkind IN ('r', 'p') LOOP\n"
        # a table's serial sequences follow it to the new owner
        "    EXECUTE format('ALTER TABLE %I.%I OWNER TO %I',\n"
        f"                   '{schema}', r.relname, '{owner}');\n"
        "  END LOOP;\n"
        # the audit trigger's function too, so later migrations (as the migrator) can replace it
        f"  IF to_regprocedure('{schema}.garrison_audit_append_only()') IS NOT NULL THEN\n"
        f"    EXECUTE format('ALTER FUNCTION %I.garrison_audit_append_only() OWNER TO %I',\n"
        f"                   '{schema}', '{owner}');\n"
        "  END IF;\n"
        "END $$"
    )


def _append_only(table: str, schema: str, rw: str, ro: str) -> str:
    """app_rw may add and read rows, never change or remove them; app_ro reads (when it exists)."""
    target = f"{_q(schema)}.{_q(table)}"
    return (
        f"DO $$ BEGIN IF to_regclass('{schema}.{table}') IS NOT NULL THEN "
        f"REVOKE UPDATE, DELETE, TRUNCATE ON {target} FROM {rw}, {ro}, PUBLIC; "
        f"GRANT SELECT, INSERT ON {target} TO {rw}; END IF; END $$"
    )


def create_roles(
    db: Database, names: RoleNames, passwords: Mapping[str, str] | None = None
) -> list[str]:
    """Run ``role_sql`` on ``db`` (connected as a superuser), then set the given passwords.

    ``passwords`` maps ``migrator``/``app_rw``/``app_ro`` to a password; the statements returned
    (what may be printed) never include them.
    """
    if not db.is_postgres:
        raise ConfigError(["DATABASE_URL: database roles exist only on PostgreSQL"])
    database = db.engine.url.database or ""
    statements = role_sql(names, database)
    try:
        with db.engine.begin() as conn:
            raw = conn.connection.driver_connection
            assert isinstance(raw, psycopg.Connection)
            cursor = raw.cursor()  # the driver's own: '%I' in format() is not a param
            for statement in statements:
                cursor.execute(statement)
            for which, password in (passwords or {}).items():
                role = getattr(names, which)
                verifier = raw.pgconn.encrypt_password(
                    password.encode(), role.encode(), b"scram-sha-256"
                )
                cursor.execute(
                    sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                        sql.Identifier(role), sql.Literal(verifier.decode())
                    )
                )
    except (sa.exc.DBAPIError, psycopg.Error) as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        raise GarrisonError(f"creating database roles failed: {reason}") from None
    return statements


def runtime_role_problems(db: Database) -> list[str]:
    """Why the service's database login is too powerful for production (empty: it is fine)."""
    if not db.is_postgres:
        return []
    with db.engine.connect() as conn:
        row = conn.execute(
            sa.text(
                "SELECT current_user AS name, rolsuper, rolbypassrls FROM pg_roles "
                "WHERE rolname = current_user"
            )
        ).one()
        owned = (
            conn.execute(
                sa.text(
                    "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() "
                    "AND tableowner = current_user AND tablename = ANY(:names)"
                ),
                {"names": list(TENANT_TABLES)},
            )
            .scalars()
            .all()
        )
    problems: list[str] = []
    hint = "connect as the app_rw role (`garrison db roles`)"
    if row.rolsuper:
        problems.append(f"DATABASE_URL: connects as superuser {row.name!r}; {hint}")
    elif row.rolbypassrls:
        problems.append(f"DATABASE_URL: role {row.name!r} bypasses row-level security; {hint}")
    if owned:
        problems.append(
            f"DATABASE_URL: role {row.name!r} owns {', '.join(sorted(owned))}, so row-level "
            f"security does not bind it; {hint}"
        )
    return problems
