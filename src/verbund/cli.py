"""The ``verbund`` program. Thin: parses options and calls the services that do the work."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from verbund.admin_client import AdminClient, AdminError, resolve_target
from verbund.config import load_config
from verbund.errors import ConfigError, VerbundError

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Verbund: federated AI access.")
keys_app = typer.Typer(no_args_is_help=True, help="Create, list and revoke API keys.")
audit_app = typer.Typer(no_args_is_help=True, help="Inspect and verify the audit log.")
app.add_typer(keys_app, name="keys")
app.add_typer(audit_app, name="audit")

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
    from verbund.server import configure_logging, stop_on_sigterm

    configure_logging("warning")
    stop_on_sigterm()
    try:
        asyncio.run(run_demo(port, state_dir, config))
    except VerbundError as exc:
        raise _fail(str(exc)) from None
    except KeyboardInterrupt:
        pass


@app.command()
def gateway(
    config: ConfigOpt,
    log_level: Annotated[str, typer.Option()] = "info",
    workers: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=64,
            help="Worker processes [default: gateway.workers]. Each worker keeps its own "
            "key cache and site states: a revocation or drain reaches the other workers "
            "only after a restart.",
        ),
    ] = None,
) -> None:
    """Run one access point for the federation in CONFIG."""
    from verbund.gateway import create_app
    from verbund.server import configure_logging, ensure_port_free, make_server, stop_on_sigterm

    configure_logging(log_level)
    try:
        cfg = load_config(config)
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

            typer.secho(
                f"{n_workers} workers: key revocations and site drains made through the admin "
                "API reach only the worker that handled them until the workers restart.",
                err=True,
                fg=typer.colors.YELLOW,
            )

            run_workers(config, cfg, n_workers, log_level)
            return
        stop_on_sigterm()
        server = make_server(
            create_app(cfg, admin_key=admin_key), cfg.gateway.host, cfg.gateway.port, log_level
        )
        asyncio.run(server.serve())
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


def _since(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        raise _fail(f"--since: expected an ISO date or Unix time, got {value!r}") from None


@app.command()
def usage(
    group_by: Annotated[str, typer.Option("--group-by")] = "institution",
    since: Annotated[str | None, typer.Option(help="ISO date/time or Unix seconds.")] = None,
    fmt: Annotated[str, typer.Option("--format", help="table | csv | json")] = "table",
    url: UrlOpt = None,
    admin_key: KeyOpt = None,
    state_dir: StateOpt = None,
) -> None:
    """Usage report: requests and tokens grouped by institution, site, model, ..."""
    if fmt not in ("table", "csv", "json"):
        raise _fail("--format must be table, csv or json")
    params: dict[str, Any] = {"group_by": group_by}
    start = _since(since)
    if start is not None:
        params["since"] = start
    data = _call(_admin(url, admin_key, state_dir), "GET", "/admin/usage", params=params)
    columns = [
        *data["group_by"],
        "requests",
        "failed",
        "prompt_tokens",
        "completion_tokens",
        "total_tokens",
    ]
    if fmt == "json":
        typer.echo(json.dumps(data["data"], indent=2))
    elif fmt == "csv":
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(data["data"])
        sys.stdout.write(buf.getvalue())
    else:
        typer.echo(_table(data["data"], columns))


@audit_app.command("verify")
def audit_verify(
    url: UrlOpt = None,
    admin_key: KeyOpt = None,
    state_dir: StateOpt = None,
) -> None:
    """Check the hash chain of the audit log; names the first broken entry."""
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


def main() -> None:
    app()


if __name__ == "__main__":
    main()
