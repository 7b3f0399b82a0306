"""``garrison users ...`` and ``garrison api-keys ...`` (A1, A7, A12)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Annotated, Any, Protocol

import typer

from garrison.cli.context import cli_actor, operate
from garrison.cli.output import emit, fail, out


class _Public(Protocol):
    def public(self) -> dict[str, Any]: ...


__all__ = ["JsonOpt", "UserArg", "app", "cli_actor", "keys_app"]

app = typer.Typer(
    help="Users: create, list, disable, enable, set roles, reset password, revoke sessions, "
    "export, delete.",
    no_args_is_help=True,
)
keys_app = typer.Typer(help="API keys: create (shown once), list, revoke.", no_args_is_help=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
UserArg = Annotated[str, typer.Argument(help="Username or id.")]


@app.command("create")
def create(
    ctx: typer.Context,
    username: Annotated[str, typer.Option("--username", help="Login name (lower-cased).")],
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from standard input.")
    ] = False,
    email: Annotated[str | None, typer.Option("--email")] = None,
    role: Annotated[
        list[str] | None, typer.Option("--role", help="Repeat for several roles.")
    ] = None,
    tenant: Annotated[
        str | None, typer.Option("--tenant", help="Bind the user to a tenant.")
    ] = None,
    password_change: Annotated[
        bool,
        typer.Option(
            "--password-change/--no-password-change",
            help="Make the user change the password at first login (the default); "
            "--no-password-change when it is the user's own (your first admin, automation).",
        ),
    ] = True,
    as_json: JsonOpt = False,
) -> None:
    """Create a user. The password comes from stdin, never from the command line."""
    if not password_stdin:
        fail(
            "pass --password-stdin and give the password on standard input", as_json=as_json, code=2
        )
    password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        fail("no password on standard input", as_json=as_json)
    user = operate(
        ctx,
        "users create",
        lambda admin, actor: admin.create_user(
            actor,
            username=username,
            password=password,
            email=email,
            roles=tuple(role or ["user"]),
            tenant=tenant,
            change_required=password_change,
        ),
        as_json=as_json,
    )
    emit(user.public(), as_json, lambda: out.print(f"created user {user.username} ({user.id})"))


@app.command("list")
def list_users(
    ctx: typer.Context,
    tenant: Annotated[str | None, typer.Option("--tenant")] = None,
    all_tenants: Annotated[bool, typer.Option("--all", help="Every tenant's users.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """List users: of one tenant, the unscoped ones (default), or all."""
    found = operate(
        ctx,
        "users list",
        lambda admin, actor: admin.list_users(actor, tenant=tenant, all_tenants=all_tenants),
        as_json=as_json,
    )
    _rows(
        found,
        as_json,
        lambda u: (
            f"{u.username:24} {','.join(u.roles):24} {u.tenant or '-':16} {u.id}"
            + ("" if u.active else "  [disabled]")
        ),
    )


def _rows(items: Sequence[_Public], as_json: bool, line: Callable[[Any], str]) -> None:
    """A listing: one line per item for a person, their public forms with ``--json``."""

    def human() -> None:
        for item in items:
            out.print(line(item))

    emit([item.public() for item in items], as_json, human)


def _set_active(ctx: typer.Context, user_ref: str, active: bool, as_json: bool) -> None:
    command = f"users {'enable' if active else 'disable'}"
    user = operate(
        ctx,
        command,
        lambda admin, actor: admin.update_user(actor, user_ref, active=active),
        as_json=as_json,
    )
    word = "enabled" if active else "disabled; its sessions, tokens and API keys are revoked"
    emit(user.public(), as_json, lambda: out.print(f"user {user.username} {word}"))


def _toggle(active: bool, doc: str) -> None:
    """``users disable`` and ``users enable``: the same use case, one switch."""

    def command(ctx: typer.Context, user: UserArg, as_json: JsonOpt = False) -> None:
        _set_active(ctx, user, active, as_json)

    command.__doc__ = doc
    app.command("enable" if active else "disable")(command)


_toggle(False, "Disable a user now: every token, session and API key stops within a second.")
_toggle(True, "Enable a disabled user (what disabling revoked stays revoked).")


@app.command("set-roles")
def set_roles(
    ctx: typer.Context,
    user: UserArg,
    role: Annotated[list[str], typer.Option("--role", help="Repeat for several roles.")],
    as_json: JsonOpt = False,
) -> None:
    """Replace a user's roles (each must be defined; the last platform admin stays admin)."""
    updated = operate(
        ctx,
        "users set-roles",
        lambda admin, actor: admin.update_user(actor, user, roles=tuple(role)),
        as_json=as_json,
    )
    emit(
        updated.public(),
        as_json,
        lambda: out.print(f"user {updated.username} now has roles {', '.join(updated.roles)}"),
    )


@app.command("revoke-sessions")
def revoke_sessions(
    ctx: typer.Context,
    user: UserArg,
    as_json: JsonOpt = False,
) -> None:
    """Revoke every session, token and API key of a user (incident response)."""
    target, revoked = operate(
        ctx,
        "users revoke-sessions",
        lambda admin, actor: admin.revoke_sessions(actor, user),
        as_json=as_json,
    )
    emit(
        {
            "user_id": target.id,
            "revoked_sessions": revoked.sessions,
            "revoked_api_keys": revoked.api_keys,
        },
        as_json,
        lambda: out.print(
            f"revoked {revoked.sessions} session(s) and {revoked.api_keys} API key(s) of "
            f"{target.username}; its live tokens and cookie sessions are dead"
        ),
    )


@app.command("reset-password")
def reset_password(ctx: typer.Context, user: UserArg, as_json: JsonOpt = False) -> None:
    """Set a random temporary password (printed once; changed at the next login) and end the
    user's sessions."""
    target, temporary, ended = operate(
        ctx,
        "users reset-password",
        lambda admin, actor: admin.reset_password(actor, user),
        as_json=as_json,
    )

    def human() -> None:
        out.print(f"password of {target.username} reset; {ended} session(s) ended")
        out.print("Temporary password, shown once (it must be changed at the next login):")
        out.print(temporary)

    emit({"user_id": target.id, "temporary_password": temporary}, as_json, human)


@keys_app.command("create")
def create_key(
    ctx: typer.Context,
    user: Annotated[str, typer.Option("--user", help="Owner: username or id.")],
    scope: Annotated[list[str], typer.Option("--scope", help="Repeat for several scopes.")],
    expires_in: Annotated[str | None, typer.Option("--expires-in", help="e.g. 90d, 12h")] = None,
    name: Annotated[str, typer.Option("--name")] = "",
    as_json: JsonOpt = False,
) -> None:
    """Create an API key. It is printed once and stored only as a hash."""
    secret, key = operate(
        ctx,
        "api-keys create",
        lambda admin, actor: admin.create_api_key(
            actor, user, scopes=tuple(scope), name=name, expires_in=expires_in
        ),
        as_json=as_json,
    )

    def human() -> None:
        out.print(f"API key {key.id} for {user}, scopes {', '.join(key.scopes)}")
        out.print("Shown once; store it now:")
        out.print(secret)

    emit({**key.public(), "key": secret}, as_json, human)


@keys_app.command("revoke")
def revoke_key(
    ctx: typer.Context,
    key_id: Annotated[str, typer.Argument(help="The key's id.")],
    as_json: JsonOpt = False,
) -> None:
    """Revoke an API key now."""
    key = operate(
        ctx,
        "api-keys revoke",
        lambda admin, actor: admin.revoke_api_key(actor, key_id),
        as_json=as_json,
    )
    emit(key.public(), as_json, lambda: out.print(f"API key {key.id} revoked"))


@keys_app.command("list")
def list_keys(
    ctx: typer.Context,
    user: Annotated[str, typer.Option("--user", help="Owner: username or id.")],
    as_json: JsonOpt = False,
) -> None:
    """List a user's API keys (never the keys themselves)."""
    _owner, found = operate(
        ctx,
        "api-keys list",
        lambda admin, actor: admin.list_api_keys(actor, user),
        as_json=as_json,
    )
    _rows(
        found,
        as_json,
        lambda k: f"{k.id} {'revoked' if k.revoked_at else 'active':8} {','.join(k.scopes)}",
    )
