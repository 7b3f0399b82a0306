"""``garrison policy test [PATH]`` (Z4): validate policies and run their decision tables.

PATH is a policy directory (its ``registry.toml`` if it has one, else the configured registry), or a
``garrison.toml`` whose roles, actions and ``policy_dir`` are tested together. Without PATH: the
configured policy set (``GARRISON_POLICY_DIR``, or the packaged default). Exit 1 on any failure.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from garrison.app import configured_policy_tests, policy_config
from garrison.cli.context import state
from garrison.cli.output import emit, errors_as_exit, fail, out
from garrison.config import Settings, load_settings
from garrison.policy.registry import Registry, load_registry_file, registry_for
from garrison.policy.tables import TestReport, run_policy_tests

app = typer.Typer(help="Policies: run their unit tests.", no_args_is_help=True)
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
PathArg = Annotated[
    Path | None,
    typer.Argument(help="A policy directory or a garrison.toml (default: the configured set)."),
]


@app.command("test")
def run_tests(ctx: typer.Context, path: PathArg = None, as_json: JsonOpt = False) -> None:
    """Validate the policies against their schema and run the decision tables beside them."""
    with errors_as_exit(as_json):
        if path is None:  # the configured set: the same report as the console's policies page
            report = configured_policy_tests(state(ctx).load(check_production=False))
        else:
            registry, directory = _target(ctx, path)
            report = run_policy_tests(registry, directory)
    if not report.ok:
        if as_json:
            emit(report.as_dict(), True)
            raise typer.Exit(1)
        _print(report)
        fail(f"policy tests failed in {report.directory}", code=1)
    emit(report.as_dict(), as_json, lambda: _print(report))


def _target(ctx: typer.Context, path: Path) -> tuple[Registry, Path]:
    if path.is_file():
        chosen = policy_config(
            load_settings({"GARRISON_CONFIG": str(path)}, check_production=False)
        )
        return registry_for(chosen), chosen.policy_dir
    settings: Settings = state(ctx).load(check_production=False)
    config = policy_config(settings)
    own = path / "registry.toml"
    return (load_registry_file(own) if own.is_file() else registry_for(config)), path


def _print(report: TestReport) -> None:
    out.print(f"policies {report.directory} (version {report.policy_version or '-'})")
    for problem in report.problems:
        out.print(f"  [red]ERROR[/] {problem}")
    for result in report.results:
        if result.passed:
            out.print(f"  [green]PASS[/] {result.case.name}")
        else:
            out.print(f"  [red]FAIL[/] {result.case.name} ({result.case.source}): {result.problem}")
    passed = len(report.results) - len(report.failed)
    out.print(f"{passed} passed, {len(report.failed)} failed")
