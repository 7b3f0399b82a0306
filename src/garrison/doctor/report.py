"""The doctor's report: a table per area for people, a JSON document for programs.

Each line is labelled with its scope: ``target`` (asked of the ``--url`` deployment over HTTP) or
``local`` (this machine's configuration, database and files).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from garrison.doctor.model import Area, Check, Status

STYLES = {
    Status.PASS: "bold green",
    Status.WARN: "bold yellow",
    Status.FAIL: "bold red",
    Status.SKIP: "dim",
}


def summary(results: Sequence[Check]) -> dict[str, int]:
    counts = Counter(str(r.status) for r in results)
    return {str(s): counts.get(str(s), 0) for s in Status}


def as_json(results: Sequence[Check]) -> dict[str, Any]:
    return {
        "ok": not any(r.status is Status.FAIL for r in results),
        "summary": summary(results),
        "checks": [r.as_dict() for r in results],
    }


SCOPE_STYLES = {"target": "bold magenta", "local": "cyan"}


def render(console: Console, results: Sequence[Check], *, target: str | None = None) -> None:
    if target is not None:
        console.print(
            f"target: {escape(target)}  [dim](target: asked of it over HTTP; local: this "
            "machine's configuration, database and files, which may not be the target's)[/]"
        )
    for area in Area:
        rows = [r for r in results if r.area is area]
        if rows:
            console.print(_table(area, rows))
    counts = summary(results)
    verdict = "[bold red]FAILED[/]" if counts["fail"] else "[bold green]OK[/]"
    console.print(
        f"{verdict}  {counts['pass']} pass, {counts['warn']} warn, "
        f"{counts['fail']} fail, {counts['skip']} skip"
    )


def _table(area: Area, rows: Sequence[Check]) -> Table:
    table = Table(
        title=area.value, title_justify="left", show_header=False, box=None, pad_edge=False
    )
    table.add_column("status", no_wrap=True)
    table.add_column("scope", no_wrap=True)
    table.add_column("check", overflow="fold")
    for r in rows:
        line = f"[bold]{escape(r.id)}[/]  {escape(r.title)} — {escape(r.finding)}"
        line += f"  [dim]({', '.join(r.requirements)}; seed {', '.join(r.seeds)})[/]"
        if r.fix:
            line += f"\n[cyan]fix:[/] {escape(r.fix)}"
        table.add_row(
            f"[{STYLES[r.status]}]{r.status.value.upper()}[/]",
            f"[{SCOPE_STYLES[r.scope]}]{r.scope}[/]",
            line,
        )
    return table
