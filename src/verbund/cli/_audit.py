"""``verbund audit``: verify the audit log's hash chain, export it as JSON lines."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from verbund.cli import _trust
from verbund.cli._output import fail
from verbund.cli._target import TargetCommand, session


def verify(
    ctx: typer.Context,
    file: Annotated[
        Path | None,
        typer.Option("--file", help="Verify an export (JSON lines) offline instead."),
    ] = None,
    checkpoints: Annotated[
        Path | None,
        typer.Option("--checkpoints", help="Also check against the checkpoints kept here."),
    ] = None,
    config: Annotated[
        Path | None, typer.Option("--config", help="Federation config with partner keys.")
    ] = None,
) -> None:
    """Check the hash chain of the audit log; names the first broken entry (exit code 2).
    With --checkpoints (or --config), also against partners' signed checkpoints."""
    if file is None and (checkpoints is not None or config is not None):
        _trust.verify_checkpoints(ctx, checkpoints, config)
        return
    data = session(ctx).call("GET", "/admin/audit/verify") if file is None else _verify(file)
    if data["ok"]:
        typer.echo(f"audit log OK: {data['entries']} entries, chain intact")
    else:
        raise fail(f"audit log BROKEN at entry {data['first_broken']}: {data['reason']}", 2)


def _verify(file: Path) -> dict[str, Any]:
    """The offline check of an export, answered like the admin API's."""
    from verbund.audit import verify_chain

    try:
        with file.open(encoding="utf-8") as f:
            result = verify_chain(json.loads(line) for line in f if line.strip())
    except (OSError, ValueError, KeyError) as exc:
        raise fail(f"{file}: not an audit export ({type(exc).__name__}: {exc})") from None
    return {
        "ok": result.ok,
        "entries": result.entries,
        "first_broken": result.first_broken,
        "reason": result.reason,
    }


def export(ctx: typer.Context) -> None:
    """Write the audit log as JSON lines, for partners to verify independently."""
    after = 0
    while rows := session(ctx).call("GET", "/admin/audit", params={"after": after})["data"]:
        for r in rows:
            sys.stdout.write(json.dumps(r, sort_keys=True) + "\n")
        after = rows[-1]["seq"]


def register(app: typer.Typer) -> None:
    audit = typer.Typer(no_args_is_help=True, help="Inspect and verify the audit log.")
    audit.command("verify", cls=TargetCommand)(verify)
    audit.command("export", cls=TargetCommand)(export)
    audit.command("checkpoint", cls=TargetCommand)(_trust.checkpoint)
    audit.command("keygen")(_trust.keygen)
    app.add_typer(audit, name="audit")
