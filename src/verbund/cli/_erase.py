"""``verbund erase --key ID | --person ID``: erase everything of one key or person."""

from __future__ import annotations

from typing import Annotated

import typer

from verbund.cli._output import echo_json, fail
from verbund.cli._target import TargetCommand, session


def erase(
    ctx: typer.Context,
    key: Annotated[str, typer.Option("--key", help="The API key's id.")] = "",
    person: Annotated[str, typer.Option("--person", help="The person's id (subject).")] = "",
    yes: Annotated[
        bool, typer.Option("--yes", help="Do not ask; erasure cannot be undone.")
    ] = False,
) -> None:
    """Erase the files, batches and training jobs of one key or of all keys of one
    person; the audit log records it."""
    if bool(key) == bool(person):
        raise fail("give exactly one of --key or --person")
    subject = f"key {key}" if key else f"person {person}"
    if not yes and not typer.confirm(f"Erase all data of {subject}? This cannot be undone."):
        raise fail("not erased")
    body = {"key_id": key} if key else {"person_id": person}
    echo_json(session(ctx).call("POST", "/admin/erasure", json=body))


def register(app: typer.Typer) -> None:
    app.command("erase", cls=TargetCommand)(erase)
