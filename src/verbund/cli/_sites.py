"""``verbund sites`` and the site lifecycle: ``drain``, ``maintenance``, ``resume``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import typer

from verbund.cli._output import echo_json, emit
from verbund.cli._target import TargetCommand, session

COLUMNS = [
    "site",
    "region",
    "max_class",
    "state",
    "backend",
    "health",
    "in_flight",
    "served",
    "ttft_ms",
]


def sites(ctx: typer.Context, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Sites and backends with lifecycle state, health and load."""
    data = session(ctx).call("GET", "/admin/sites")
    if as_json:
        echo_json(data)
        return
    emit(rows(data["sites"]), COLUMNS)


def rows(sites: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per backend; a site without backends still gets one (backend ``-``)."""
    out = []
    for s in sites:
        site = {
            "site": s["name"],
            "region": s["region"],
            "max_class": s["max_data_class"],
            "state": s["state"],
        }
        backends = s.get("backends") or [None]
        for b in backends:
            out.append(site | _backend(b))
    return out


def _backend(b: dict[str, Any] | None) -> dict[str, Any]:
    if b is None:
        return dict.fromkeys(COLUMNS[4:])
    return {
        "backend": b["name"],
        "health": "ejected" if b["ejected"] else ("up" if b["healthy"] else "down"),
        "in_flight": b["outstanding"],
        "served": b["served"],
        "ttft_ms": b["ttft_ewma_ms"],
    }


def _lifecycle(action: str) -> Callable[..., None]:
    def command(
        ctx: typer.Context, site: Annotated[str, typer.Argument(help="Site name.")]
    ) -> None:
        data = session(ctx).call("POST", f"/admin/sites/{site}/{action}")
        typer.echo(f"{data['site']}: {data['previous']} -> {data['state']}")

    return command


def register(app: typer.Typer) -> None:
    app.command(cls=TargetCommand)(sites)
    for action, text in (
        ("drain", "Stop sending new requests to SITE; requests in flight finish."),
        ("maintenance", "Take SITE out of the federation entirely."),
        ("resume", "Bring SITE back into service."),
    ):
        app.command(action, help=text, cls=TargetCommand)(_lifecycle(action))
