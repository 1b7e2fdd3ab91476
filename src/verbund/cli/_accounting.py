"""``verbund usage`` and ``verbund settle``: usage reports and the monthly settlement."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from verbund.accounting import parse_month
from verbund.cli import _trust
from verbund.cli._output import FormatOpt, check_format, echo_json, emit, fail
from verbund.cli._target import TargetCommand, session

NODE_TIME_COLUMNS = ["site", "model", "cpu_seconds", "gpu_seconds", "hours"]
USAGE_COLUMNS = [
    "requests",
    "failed",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "cpu_seconds",
    "gpu_seconds",
    "request_bytes",
    "response_bytes",
]

SETTLEMENT_SECTIONS = {
    "usage": [
        "institution",
        "partner_site",
        "site",
        "requests",
        "prompt_tokens",
        "completion_tokens",
        "cost",
    ],
    "delivered": [
        "site",
        "site_region",
        "to_region",
        "requests",
        "prompt_tokens",
        "completion_tokens",
        "value",
    ],
    "balances": ["site_a", "site_b", "a_to_b", "b_to_a", "net", "payer", "payee", "amount"],
    "sites": ["site", "delivered", "to_other_partners", "from_other_partners", "net"],
}


def parse_time(value: str | None, option: str = "--since") -> float | None:
    """Unix seconds, an ISO date/time (UTC unless it names a zone) or a month ``YYYY-MM``."""
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        return parse_month(value)[0]
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise fail(f"{option}: expected an ISO date, YYYY-MM or Unix time, got {value!r}") from None
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


def usage(
    ctx: typer.Context,
    group_by: Annotated[
        str,
        typer.Option(
            "--group-by",
            help="Comma-separated: month, day, institution, site, model, backend, key, "
            "endpoint, status, access_point.",
        ),
    ] = "institution",
    since: Annotated[
        str | None, typer.Option(help="From (inclusive): ISO date/time (UTC), YYYY-MM or Unix s.")
    ] = None,
    until: Annotated[
        str | None, typer.Option(help="Until (exclusive): ISO date/time (UTC), YYYY-MM or Unix s.")
    ] = None,
    institution: Annotated[str | None, typer.Option(help="Only this institution.")] = None,
    fmt: FormatOpt = "table",
    node_time: Annotated[
        bool,
        typer.Option(
            "--node-time",
            help="The sites' node time of on-demand models (CPU/GPU seconds held, idle "
            "included) per site and model instead of the requests and tokens.",
        ),
    ] = False,
) -> None:
    """Usage report: requests and tokens grouped by period, institution, site, model, ...;
    with --node-time what serving on demand cost the sites."""
    check_format(fmt)
    params: dict[str, Any] = {"group_by": group_by}
    for name, value in (("since", parse_time(since)), ("until", parse_time(until, "--until"))):
        if value is not None:
            params[name] = value
    if institution:
        params["institution"] = institution
    if node_time and institution:
        raise fail("--node-time is the sites' cost, not an institution's: drop --institution")
    data = session(ctx).call("GET", "/admin/usage", params=params)
    if node_time:
        emit(data.get("node_time", []), NODE_TIME_COLUMNS, fmt)
        return
    emit(data["data"], [*data["group_by"], *USAGE_COLUMNS], fmt)


def settle(
    ctx: typer.Context,
    month: Annotated[str, typer.Option("--month", help="Calendar month (UTC), YYYY-MM.")],
    fmt: FormatOpt = "table",
    section: Annotated[
        str, typer.Option(help="all | usage | delivered | balances | sites (csv: one section).")
    ] = "all",
    statements: Annotated[
        Path | None,
        typer.Option("--statements", help="Sites' signed usage statements (*.json) to check."),
    ] = None,
    config: Annotated[
        Path | None, typer.Option("--config", help="Federation config with the sites' keys.")
    ] = None,
    from_sites: Annotated[
        bool,
        typer.Option(
            "--from-sites", help="Fetch the statements from the sites' agents (needs --config)."
        ),
    ] = False,
) -> None:
    """Monthly settlement between partner sites, recomputed from the usage records; with
    --statements and/or --from-sites, cross-checked against the sites' signed statements
    (exit code 2 on a difference)."""
    check_format(fmt)
    if section != "all" and section not in SETTLEMENT_SECTIONS:
        raise fail(f"--section must be all or one of {', '.join(SETTLEMENT_SECTIONS)}")
    try:
        parse_month(month)
    except ValueError:
        raise fail(f"--month: expected YYYY-MM, got {month!r}") from None
    data = session(ctx).call("GET", "/admin/settlement", params={"month": month})
    checked = (
        _trust.countersigned(data, statements, config, from_sites)
        if statements is not None or from_sites
        else None
    )
    if checked is not None:
        data["countersigned"] = checked
    if fmt == "json":
        echo_json(data if section == "all" else data[section])
        if checked and _trust.differs(checked):
            raise typer.Exit(2)
        return
    sections = list(SETTLEMENT_SECTIONS) if section == "all" else [section]
    if fmt == "table":
        typer.echo(
            f"Settlement {data['month']} ({data['period']['from']} to {data['period']['until']}),"
            f" {data['currency']}; {data['inputs']['requests']} requests,"
            f" inputs sha256 {data['inputs']['sha256'][:16]}"
        )
    for i, name in enumerate(sections):
        if fmt == "csv" and len(sections) > 1:
            sys.stdout.write(("\n" if i else "") + f"# {name}\n")
        elif fmt == "table":
            typer.echo(f"\n{name}:")
        emit(data[name], SETTLEMENT_SECTIONS[name], fmt)
    if fmt == "table" and data["unassigned"] and section in ("all", "balances"):
        typer.echo(f"\nno partner site (not in balances): {', '.join(data['unassigned'])}")
    if checked is not None:
        _trust.print_countersigned(checked)
        if _trust.differs(checked):
            raise typer.Exit(2)


def register(app: typer.Typer) -> None:
    app.command(cls=TargetCommand)(usage)
    app.command(cls=TargetCommand)(settle)
