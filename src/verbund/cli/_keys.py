"""``verbund keys``: create, list and revoke API keys."""

from __future__ import annotations

from typing import Annotated

import typer

from verbund.cli._output import echo_json, emit
from verbund.cli._target import TargetCommand, session

COLUMNS = ["id", "prefix", "institution", "name", "revoked"]


def create(
    ctx: typer.Context,
    institution: Annotated[
        str | None, typer.Option("--institution", help="Institution id.")
    ] = None,
    name: Annotated[str, typer.Option("--name")] = "",
    role: Annotated[
        str | None,
        typer.Option(
            "--role",
            help="An admin key of this role instead of an institution's key: "
            "site_operator (with --site), institution_admin (with --institution), "
            "auditor, federation_admin.",
        ),
    ] = None,
    site: Annotated[str | None, typer.Option("--site", help="A site_operator's site.")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Create a key; it is shown only this once."""
    body: dict[str, str] = {"name": name}
    for field, value in (("institution", institution), ("role", role), ("site", site)):
        if value is not None:
            body[field] = value
    data = session(ctx).call("POST", "/admin/keys", json=body)
    if as_json:
        echo_json(data, indent=None)
    else:
        typer.echo(f"id:  {data['id']}\nkey: {data['key']}\n(store it now: it is not shown again)")


def revoke(
    ctx: typer.Context, key_id: Annotated[str, typer.Argument(help="Key id (key_...).")]
) -> None:
    """Revoke a key by its id."""
    session(ctx).call("DELETE", f"/admin/keys/{key_id}")
    typer.echo(f"revoked {key_id}")


def list_keys(
    ctx: typer.Context, institution: Annotated[str | None, typer.Option("--institution")] = None
) -> None:
    """List keys (ids and prefixes only)."""
    params = {"institution": institution} if institution else {}
    emit(session(ctx).call("GET", "/admin/keys", params=params)["data"], COLUMNS)


def register(app: typer.Typer) -> None:
    keys = typer.Typer(no_args_is_help=True, help="Create, list and revoke API keys.")
    keys.command("create", cls=TargetCommand)(create)
    keys.command("revoke", cls=TargetCommand)(revoke)
    keys.command("list", cls=TargetCommand)(list_keys)
    app.add_typer(keys, name="keys")
