"""``garrison users ...`` and ``garrison api-keys ...`` (A1, A7, A12)."""

from __future__ import annotations

import getpass
import sys
from typing import Annotated

import typer

from garrison.audit.event import AuditEvent
from garrison.cli.context import state
from garrison.cli.output import emit, errors_as_exit, fail, out
from garrison.identity.apikeys import parse_duration

app = typer.Typer(
    help="Users: create, list, disable, enable, revoke sessions.", no_args_is_help=True
)
keys_app = typer.Typer(help="API keys: create (shown once), list, revoke.", no_args_is_help=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


def cli_actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (OSError, KeyError):
        return "cli"


def _audit(ctx: typer.Context, action: str, **details: object) -> None:
    svc = state(ctx).services()
    svc.audit.record_sync(
        AuditEvent(action=action, outcome="success", actor=cli_actor(), details=dict(details))
    )


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
    svc = state(ctx).services()
    with errors_as_exit(as_json):
        user = svc.users.create(
            username, password, email=email, roles=tuple(role or ["user"]), tenant=tenant
        )
    _audit(ctx, "admin.user.create", user_id=user.id, username=user.username)
    emit(user.public(), as_json, lambda: out.print(f"created user {user.username} ({user.id})"))


@app.command("list")
def list_users(
    ctx: typer.Context,
    tenant: Annotated[str | None, typer.Option("--tenant")] = None,
    all_tenants: Annotated[bool, typer.Option("--all", help="Every tenant's users.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """List users: of one tenant, the unscoped ones (default), or all."""
    svc = state(ctx).services()
    with errors_as_exit(as_json):
        found = svc.users.list(tenant, all_tenants=all_tenants, limit=10_000)

    def human() -> None:
        for u in found:
            flag = "" if u.active else "  [disabled]"
            out.print(f"{u.username:24} {','.join(u.roles):24} {u.tenant or '-':16} {u.id}{flag}")

    emit([u.public() for u in found], as_json, human)


def _set_active(ctx: typer.Context, user_ref: str, active: bool, as_json: bool) -> None:
    svc = state(ctx).services()
    with errors_as_exit(as_json):
        user = svc.users.set_active(svc.users.resolve(user_ref).id, active)
    _audit(ctx, f"admin.user.{'enable' if active else 'disable'}", user_id=user.id)
    word = "enabled" if active else "disabled; its sessions are revoked"
    emit(user.public(), as_json, lambda: out.print(f"user {user.username} {word}"))


@app.command("disable")
def disable(
    ctx: typer.Context,
    user: Annotated[str, typer.Argument(help="Username or id.")],
    as_json: JsonOpt = False,
) -> None:
    """Disable a user now: every token and session stops working within a second."""
    _set_active(ctx, user, False, as_json)


@app.command("enable")
def enable(
    ctx: typer.Context,
    user: Annotated[str, typer.Argument(help="Username or id.")],
    as_json: JsonOpt = False,
) -> None:
    """Enable a disabled user (old sessions stay revoked)."""
    _set_active(ctx, user, True, as_json)


@app.command("revoke-sessions")
def revoke_sessions(
    ctx: typer.Context,
    user: Annotated[str, typer.Argument(help="Username or id.")],
    as_json: JsonOpt = False,
) -> None:
    """Revoke every session and token of a user (incident response)."""
    svc = state(ctx).services()
    with errors_as_exit(as_json):
        target = svc.users.resolve(user)
        count = svc.users.revoke_sessions(target.id)
    _audit(ctx, "admin.user.revoke_sessions", user_id=target.id, families=count)
    emit(
        {"user_id": target.id, "revoked_sessions": count},
        as_json,
        lambda: out.print(f"revoked {count} session(s) of {target.username}; live tokens are dead"),
    )


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
    svc = state(ctx).services()
    with errors_as_exit(as_json):
        owner = svc.users.resolve(user)
        expires = parse_duration(expires_in) if expires_in else None
        secret, key = svc.api_keys.create(
            owner.id, tuple(scope), tenant=owner.tenant, name=name, expires_in=expires
        )
    _audit(ctx, "admin.api_key.create", key_id=key.id, user_id=owner.id)

    def human() -> None:
        out.print(f"API key {key.id} for {owner.username}, scopes {', '.join(key.scopes)}")
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
    svc = state(ctx).services()
    with errors_as_exit(as_json):
        key = svc.api_keys.revoke(key_id)
    _audit(ctx, "admin.api_key.revoke", key_id=key.id)
    emit(key.public(), as_json, lambda: out.print(f"API key {key.id} revoked"))


@keys_app.command("list")
def list_keys(
    ctx: typer.Context,
    user: Annotated[str, typer.Option("--user", help="Owner: username or id.")],
    as_json: JsonOpt = False,
) -> None:
    """List a user's API keys (never the keys themselves)."""
    svc = state(ctx).services()
    with errors_as_exit(as_json):
        owner = svc.users.resolve(user)
        found = svc.api_keys.list_for(owner.id)

    def human() -> None:
        for k in found:
            status = "revoked" if k.revoked_at else "active"
            out.print(f"{k.id} {status:8} {','.join(k.scopes)}")

    emit([k.public() for k in found], as_json, human)
