"""CLI output: readable by a person, or with ``--json`` by a program; errors to stderr, exit 1."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

import sqlalchemy as sa
import typer
from rich.console import Console
from rich.markup import escape

from garrison.errors import ConfigError, GarrisonError
from garrison.storage.db import connection_problem, error_summary

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def emit(data: Any, as_json: bool, human: Callable[[], None] | None = None) -> None:
    if as_json:
        sys.stdout.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    elif human is not None:
        human()
    else:
        out.print(data)


def fail(
    message: str, problems: tuple[str, ...] = (), as_json: bool = False, code: int = 1
) -> NoReturn:
    if as_json:
        sys.stdout.write(json.dumps({"error": message, "problems": list(problems)}) + "\n")
    else:
        # messages quote settings, URLs and IPv6 hosts: their brackets are text, not markup
        err.print(f"[bold red]error:[/] {escape(message)}")
        for problem in problems:
            err.print(f"  - {escape(problem)}")
    raise typer.Exit(code)


@contextmanager
def errors_as_exit(as_json: bool = False) -> Iterator[None]:
    """Turn Garrison's errors into a clear message and exit 1: never a stack trace."""
    try:
        yield
    except ConfigError as exc:
        fail("refusing to start: configuration is not usable", exc.problems, as_json)
    except GarrisonError as exc:
        fail(exc.detail, exc.reasons, as_json)
    except sa.exc.SQLAlchemyError as exc:
        fail_database(exc, as_json)


def fail_database(exc: BaseException, as_json: bool = False) -> NoReturn:
    """A database that cannot be reached is a refusal naming DATABASE_URL; any other database
    error is one line (never its parameters, a failing row, or a traceback: C6)."""
    problem = connection_problem(exc)
    if problem is not None:
        fail("refusing to start: configuration is not usable", (problem,), as_json)
    fail(error_summary(exc), (), as_json)
