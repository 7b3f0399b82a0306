"""``garrison users export U`` and ``garrison users delete U --reason R`` (V4).

Both are audited: the export with what it contained (counts, not content), the deletion with its
reason. The export goes to standard output, or with ``--output FILE`` to a new file readable only
by its owner (it is personal data).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer

from garrison.cli.context import operate
from garrison.cli.output import emit, fail, out
from garrison.cli.users import JsonOpt, UserArg


def export(
    ctx: typer.Context,
    user: UserArg,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write to this new file (mode 0600).")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Export everything Garrison holds about a user as JSON (never hashes, keys or secrets)."""
    fd = None
    if output is not None:  # opened first: a path that cannot be written fails before the export
        try:
            fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError as exc:
            fail(f"cannot write {output}: {exc.strerror}", as_json=as_json)
    try:
        target, document = operate(
            ctx,
            "users export",
            lambda admin, actor: admin.export_user(actor, user),
            as_json=as_json,
        )
    except BaseException:
        if fd is not None:
            os.close(fd)
            os.unlink(output)  # type: ignore[arg-type]
        raise
    text = json.dumps(document, indent=2, sort_keys=True, default=str, ensure_ascii=False) + "\n"
    if fd is not None:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
    counts = {
        name: len(document[name])
        for name in ("sessions", "api_keys", "vault_secrets_created", "audit_records")
    }
    if output is None:
        typer.echo(text, nl=False)
        return
    emit(
        {"user_id": target.id, "file": str(output), **counts},
        as_json,
        lambda: out.print(f"exported user {target.id} to {output}"),
    )


def delete(
    ctx: typer.Context,
    user: UserArg,
    reason: Annotated[str, typer.Option("--reason", help="Why (kept in the audit log).")],
    as_json: JsonOpt = False,
) -> None:
    """Delete a user with their sessions and API keys (GDPR erasure); audit records remain."""
    if not reason.strip():
        fail("--reason must not be empty", as_json=as_json, code=2)
    report = operate(
        ctx,
        "users delete",
        lambda admin, actor: admin.delete_user(actor, user, reason=reason),
        as_json=as_json,
    )
    emit(
        report.as_dict(),
        as_json,
        lambda: out.print(
            f"deleted user {report.username} ({report.user_id}), {report.sessions} session(s), "
            f"{report.api_keys} API key(s)"
        ),
    )
