"""The ``verbund`` program. Thin: parses options and calls the services that do the work."""

from __future__ import annotations

import csv
import io
import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from verbund.admin_client import AdminClient, AdminError, Target, resolve_target
from verbund.config import load_config
from verbund.errors import ConfigError, VerbundError

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Verbund: federated AI access.")
keys_app = typer.Typer(no_args_is_help=True, help="Create, list and revoke API keys.")
audit_app = typer.Typer(no_args_is_help=True, help="Inspect and verify the audit log.")
app.add_typer(keys_app, name="keys")
app.add_typer(audit_app, name="audit")
jobs_app = typer.Typer(no_args_is_help=True, help="Training and fine-tuning jobs.")
app.add_typer(jobs_app, name="jobs")

UrlOpt = Annotated[str | None, typer.Option("--url", help="Access point URL [$VERBUND_URL].")]
KeyOpt = Annotated[str | None, typer.Option("--admin-key", help="Admin key [$VERBUND_ADMIN_KEY].")]
StateOpt = Annotated[
    Path | None, typer.Option("--state-dir", help="State dir of `verbund up` (reads demo.json).")
]
ConfigOpt = Annotated[Path, typer.Option("--config", "-c", help="Federation config (TOML).")]


def _fail(message: str, code: int = 1) -> typer.Exit:
    typer.secho(message, err=True, fg=typer.colors.RED)
    return typer.Exit(code)


def _admin(url: str | None, key: str | None, state_dir: Path | None) -> AdminClient:
    try:
        return AdminClient(resolve_target(url, key, state_dir))
    except AdminError as exc:
        raise _fail(str(exc)) from None


def _call(client: AdminClient, method: str, path: str, **kwargs: Any) -> Any:
    try:
        return client.call(method, path, **kwargs)
    except AdminError as exc:
        raise _fail(str(exc)) from None


def _table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    if not rows:
        return "(no rows)"
    cells = [[str(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(lines)


@app.command()
def up(
    port: Annotated[int, typer.Option(help="Port of the access point.")] = 8080,
    state_dir: Annotated[Path, typer.Option("--state-dir")] = Path(".verbund"),
    config: Annotated[Path | None, typer.Option("--config", "-c")] = None,
) -> None:
    """Run the embedded demo federation: sites with real model servers and one access point."""
    from verbund.demo import run_demo
    from verbund.server import configure_logging, run_on_uvloop, stop_on_sigterm

    configure_logging("warning")
    stop_on_sigterm()
    try:
        run_on_uvloop(run_demo(port, state_dir, config))
    except VerbundError as exc:
        raise _fail(str(exc)) from None
    except KeyboardInterrupt:
        pass


@app.command()
def gateway(
    config: ConfigOpt,
    name: Annotated[
        str | None,
        typer.Option(envvar="VERBUND_GATEWAY_NAME", help="Override [gateway] name (per replica)."),
    ] = None,
    log_level: Annotated[str, typer.Option()] = "info",
    workers: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=64,
            help="Worker processes [default: gateway.workers]. Workers share changes over "
            "Redis ([coordination] redis_url) at once, otherwise by the 30 s reload.",
        ),
    ] = None,
) -> None:
    """Run one access point for the federation in CONFIG."""
    from verbund.gateway import create_app
    from verbund.server import (
        configure_logging,
        ensure_port_free,
        make_server,
        run_on_uvloop,
        stop_on_sigterm,
    )

    stop_on_sigterm()
    try:
        cfg = load_config(config)
        configure_logging(log_level, cfg.telemetry.log_format)
        if name:
            cfg = cfg.model_copy(update={"gateway": cfg.gateway.model_copy(update={"name": name})})
        ensure_port_free(cfg.gateway.host, cfg.gateway.port)
        admin_key = cfg.admin_key()
        if not admin_key:
            typer.secho(
                f"${cfg.gateway.admin_key_env} is not set: the admin API is closed.",
                err=True,
                fg=typer.colors.YELLOW,
            )
        # several worker processes (uvicorn's factory mode), see verbund.gateway._factory
        n_workers = workers if workers is not None else cfg.gateway.workers
        if n_workers > 1:
            from verbund.server import run_workers

            if not cfg.coordination.redis_url:
                typer.secho(
                    f"{n_workers} workers without [coordination] redis_url: key revocations and "
                    "site drains reach the other workers only with the 30 s reload.",
                    err=True,
                    fg=typer.colors.YELLOW,
                )

            run_workers(config, cfg, n_workers, log_level)
            return
        server = make_server(
            create_app(cfg, admin_key=admin_key), cfg.gateway.host, cfg.gateway.port, log_level
        )
        run_on_uvloop(server.serve())
    except VerbundError as exc:
        raise _fail(str(exc)) from None
    except KeyboardInterrupt:
        pass


@app.command()
def check(config: ConfigOpt) -> None:
    """Validate a federation config; every problem is listed with its field path."""
    try:
        cfg = load_config(config)
    except ConfigError as exc:
        typer.secho(f"{config}: {len(exc.problems)} problem(s)", err=True, fg=typer.colors.RED)
        for path, msg in exc.problems:
            typer.echo(f"  {path or '<file>'}: {msg}", err=True)
        raise typer.Exit(1) from None
    backends = sum(len(s.backends) for s in cfg.sites)
    typer.echo(
        f"{config}: OK - {len(cfg.sites)} sites, {backends} backends, {len(cfg.models)} models, "
        f"{len(cfg.institutions)} institutions"
    )


@app.command()
def sites(
    url: UrlOpt = None,
    admin_key: KeyOpt = None,
    state_dir: StateOpt = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Sites and backends with lifecycle state, health and load."""
    data = _call(_admin(url, admin_key, state_dir), "GET", "/admin/sites")
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return
    rows = []
    for s in data["sites"]:
        for b in s.get("backends", []):
            rows.append(
                {
                    "site": s["name"],
                    "region": s["region"],
                    "max_class": s["max_data_class"],
                    "state": s["state"],
                    "backend": b["name"],
                    "health": "ejected" if b["ejected"] else ("up" if b["healthy"] else "down"),
                    "in_flight": b["outstanding"],
                    "served": b["served"],
                    "ttft_ms": b["ttft_ewma_ms"] if b["ttft_ewma_ms"] is not None else "-",
                }
            )
    typer.echo(
        _table(
            rows,
            [
                "site",
                "region",
                "max_class",
                "state",
                "backend",
                "health",
                "in_flight",
                "served",
                "ttft_ms",
            ],
        )
    )


def _lifecycle(action: str) -> Any:
    def command(
        site: Annotated[str, typer.Argument(help="Site name.")],
        url: UrlOpt = None,
        admin_key: KeyOpt = None,
        state_dir: StateOpt = None,
    ) -> None:
        data = _call(_admin(url, admin_key, state_dir), "POST", f"/admin/sites/{site}/{action}")
        typer.echo(f"{data['site']}: {data['previous']} -> {data['state']}")

    return command


app.command("drain", help="Stop sending new requests to SITE; requests in flight finish.")(
    _lifecycle("drain")
)
app.command("maintenance", help="Take SITE out of the federation entirely.")(
    _lifecycle("maintenance")
)
app.command("resume", help="Bring SITE back into service.")(_lifecycle("resume"))


@keys_app.command("create")
def keys_create(
    institution: Annotated[str, typer.Option("--institution", help="Institution id.")],
    name: Annotated[str, typer.Option("--name")] = "",
    as_json: Annotated[bool, typer.Option("--json")] = False,
    url: UrlOpt = None,
    admin_key: KeyOpt = None,
    state_dir: StateOpt = None,
) -> None:
    """Create a key; it is shown only this once."""
    data = _call(
        _admin(url, admin_key, state_dir),
        "POST",
        "/admin/keys",
        json={"institution": institution, "name": name},
    )
    if as_json:
        typer.echo(json.dumps(data))
    else:
        typer.echo(f"id:  {data['id']}\nkey: {data['key']}\n(store it now: it is not shown again)")


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="Key id (key_...).")],
    url: UrlOpt = None,
    admin_key: KeyOpt = None,
    state_dir: StateOpt = None,
) -> None:
    """Revoke a key by its id."""
    _call(_admin(url, admin_key, state_dir), "DELETE", f"/admin/keys/{key_id}")
    typer.echo(f"revoked {key_id}")


@keys_app.command("list")
def keys_list(
    institution: Annotated[str | None, typer.Option("--institution")] = None,
    url: UrlOpt = None,
    admin_key: KeyOpt = None,
    state_dir: StateOpt = None,
) -> None:
    """List keys (ids and prefixes only)."""
    params = {"institution": institution} if institution else {}
    data = _call(_admin(url, admin_key, state_dir), "GET", "/admin/keys", params=params)
    typer.echo(_table(data["data"], ["id", "prefix", "institution", "name", "revoked"]))


def _time(value: str | None, option: str = "--since") -> float | None:
    """Unix seconds, an ISO date/time (UTC unless it names a zone) or a month ``YYYY-MM``."""
    from verbund.accounting import parse_month

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
        raise _fail(
            f"{option}: expected an ISO date, YYYY-MM or Unix time, got {value!r}"
        ) from None
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


def _emit(rows: list[dict[str, Any]], columns: list[str], fmt: str) -> None:
    if fmt == "json":
        typer.echo(json.dumps(rows, indent=2))
    elif fmt == "csv":
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
        sys.stdout.write(buf.getvalue())
    else:
        shown = [{k: "-" if v is None else v for k, v in r.items()} for r in rows]
        typer.echo(_table(shown, columns))


FormatOpt = Annotated[str, typer.Option("--format", help="table | csv | json")]


@app.command()
def usage(
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
    url: UrlOpt = None,
    admin_key: KeyOpt = None,
    state_dir: StateOpt = None,
) -> None:
    """Usage report: requests and tokens grouped by period, institution, site, model, ..."""
    if fmt not in ("table", "csv", "json"):
        raise _fail("--format must be table, csv or json")
    params: dict[str, Any] = {"group_by": group_by}
    for name, value in (("since", _time(since)), ("until", _time(until, "--until"))):
        if value is not None:
            params[name] = value
    if institution:
        params["institution"] = institution
    data = _call(_admin(url, admin_key, state_dir), "GET", "/admin/usage", params=params)
    columns = [
        *data["group_by"],
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
    _emit(data["data"], columns, fmt)


_SETTLEMENT_SECTIONS = {
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


@app.command()
def settle(
    month: Annotated[str, typer.Option("--month", help="Calendar month (UTC), YYYY-MM.")],
    fmt: FormatOpt = "table",
    section: Annotated[
        str, typer.Option(help="all | usage | delivered | balances | sites (csv: one section).")
    ] = "all",
    url: UrlOpt = None,
    admin_key: KeyOpt = None,
    state_dir: StateOpt = None,
) -> None:
    """Monthly settlement between partner sites, recomputed from the usage records."""
    from verbund.accounting import parse_month

    if fmt not in ("table", "csv", "json"):
        raise _fail("--format must be table, csv or json")
    if section != "all" and section not in _SETTLEMENT_SECTIONS:
        raise _fail(f"--section must be all or one of {', '.join(_SETTLEMENT_SECTIONS)}")
    try:
        parse_month(month)
    except ValueError:
        raise _fail(f"--month: expected YYYY-MM, got {month!r}") from None
    data = _call(
        _admin(url, admin_key, state_dir), "GET", "/admin/settlement", params={"month": month}
    )
    sections = list(_SETTLEMENT_SECTIONS) if section == "all" else [section]
    if fmt == "json":
        typer.echo(json.dumps(data if section == "all" else data[section], indent=2))
        return
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
        _emit(data[name], _SETTLEMENT_SECTIONS[name], fmt)
    if fmt == "table" and data["unassigned"] and section in ("all", "balances"):
        typer.echo(f"\nno partner site (not in balances): {', '.join(data['unassigned'])}")


@audit_app.command("verify")
def audit_verify(
    file: Annotated[
        Path | None,
        typer.Option("--file", help="Verify an export (JSON lines) offline instead."),
    ] = None,
    url: UrlOpt = None,
    admin_key: KeyOpt = None,
    state_dir: StateOpt = None,
) -> None:
    """Check the hash chain of the audit log; names the first broken entry (exit code 2)."""
    if file is not None:
        from verbund.audit import verify_chain

        try:
            with file.open(encoding="utf-8") as f:
                result = verify_chain(json.loads(line) for line in f if line.strip())
        except (OSError, ValueError, KeyError) as exc:
            raise _fail(f"{file}: not an audit export ({type(exc).__name__}: {exc})") from None
        data: dict[str, Any] = {
            "ok": result.ok,
            "entries": result.entries,
            "first_broken": result.first_broken,
            "reason": result.reason,
        }
    else:
        data = _call(_admin(url, admin_key, state_dir), "GET", "/admin/audit/verify")
    if data["ok"]:
        typer.echo(f"audit log OK: {data['entries']} entries, chain intact")
    else:
        raise _fail(f"audit log BROKEN at entry {data['first_broken']}: {data['reason']}", 2)


@audit_app.command("export")
def audit_export(
    url: UrlOpt = None,
    admin_key: KeyOpt = None,
    state_dir: StateOpt = None,
) -> None:
    """Write the audit log as JSON lines, for partners to verify independently."""
    client = _admin(url, admin_key, state_dir)
    after = 0
    while True:
        rows = _call(client, "GET", "/admin/audit", params={"after": after})["data"]
        if not rows:
            break
        for r in rows:
            sys.stdout.write(json.dumps(r, sort_keys=True) + "\n")
        after = rows[-1]["seq"]


# -- training jobs (issue 9) -------------------------------------------------------------

ApiKeyOpt = Annotated[
    str | None,
    typer.Option(
        "--api-key",
        envvar="VERBUND_API_KEY",
        help="An institution's key: its own jobs only [$VERBUND_API_KEY]. Default: admin key.",
    ),
]


def _jobs_client(
    url: str | None, admin_key: str | None, api_key: str | None, state_dir: Path | None
) -> tuple[AdminClient, str]:
    """With an institution key: /v1/training/jobs; with the admin key: /admin/jobs."""
    if not api_key:
        return _admin(url, admin_key, state_dir), "/admin/jobs"
    url = url or os.environ.get("VERBUND_URL")
    demo = (state_dir or Path(".verbund")) / "demo.json"
    if not url and demo.exists():
        url = json.loads(demo.read_text()).get("url")
    if not url:
        raise _fail("Which access point? Give --url or set VERBUND_URL.")
    return AdminClient(Target(url.rstrip("/"), api_key)), "/v1/training/jobs"


def _when(ts: Any) -> str:
    return "-" if ts is None else datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


@jobs_app.command("list")
def jobs_list(
    institution: Annotated[str | None, typer.Option("--institution")] = None,
    status: Annotated[str | None, typer.Option("--status")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=100)] = 20,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    url: UrlOpt = None,
    admin_key: KeyOpt = None,
    api_key: ApiKeyOpt = None,
    state_dir: StateOpt = None,
) -> None:
    """Jobs, newest first: status, site, model, CPU and GPU seconds."""
    client, base = _jobs_client(url, admin_key, api_key, state_dir)
    params: dict[str, Any] = {"limit": limit}
    if institution:
        params["institution"] = institution
    if status:
        params["status"] = status
    data = _call(client, "GET", base, params=params)["data"]
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return
    rows = [
        {
            "id": j["id"],
            "institution": j["institution"],
            "recipe": j["recipe"],
            "status": j["status"],
            "site": j["site"] or "-",
            "created": _when(j["created_at"]),
            "model": j["result_model"] or "-",
            "cpu_s": j["usage"]["cpu_seconds"],
            "gpu_s": j["usage"]["gpu_seconds"],
        }
        for j in data
    ]
    typer.echo(
        _table(
            rows,
            ["id", "institution", "recipe", "status", "site", "created", "model", "cpu_s", "gpu_s"],
        )
    )


@jobs_app.command("show")
def jobs_show(
    job_id: Annotated[str, typer.Argument(help="Job id (ftjob-... or trjob-...).")],
    url: UrlOpt = None,
    admin_key: KeyOpt = None,
    api_key: ApiKeyOpt = None,
    state_dir: StateOpt = None,
) -> None:
    """One job in full (JSON)."""
    client, base = _jobs_client(url, admin_key, api_key, state_dir)
    typer.echo(json.dumps(_call(client, "GET", f"{base}/{job_id}"), indent=2))


@jobs_app.command("events")
def jobs_events(
    job_id: Annotated[str, typer.Argument(help="Job id.")],
    limit: Annotated[int, typer.Option("--limit", min=1, max=100)] = 100,
    url: UrlOpt = None,
    admin_key: KeyOpt = None,
    api_key: ApiKeyOpt = None,
    state_dir: StateOpt = None,
) -> None:
    """The job's events, oldest first: placement, progress and metrics, outcome."""
    client, base = _jobs_client(url, admin_key, api_key, state_dir)
    data = _call(client, "GET", f"{base}/{job_id}/events", params={"limit": limit})["data"]
    for e in reversed(data):
        typer.echo(f"{_when(e['created_at'])}  {e['level']:<5}  {e['message']}")


@jobs_app.command("cancel")
def jobs_cancel(
    job_id: Annotated[str, typer.Argument(help="Job id.")],
    url: UrlOpt = None,
    admin_key: KeyOpt = None,
    api_key: ApiKeyOpt = None,
    state_dir: StateOpt = None,
) -> None:
    """Cancel a job; a running one is stopped at its site."""
    client, base = _jobs_client(url, admin_key, api_key, state_dir)
    data = _call(client, "POST", f"{base}/{job_id}/cancel")
    typer.echo(f"{data['id']}: {data['status']}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
