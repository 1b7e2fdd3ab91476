"""Commands that run Verbund locally: ``up``, ``gateway``, ``site``, ``check``. No target needed."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, NoReturn

import typer

from verbund.cli._output import fail
from verbund.cli._target import DEFAULT_STATE_DIR
from verbund.config import load_config
from verbund.errors import ConfigError, VerbundError

ConfigOpt = Annotated[Path, typer.Option("--config", "-c", help="Federation config (TOML).")]


def up(
    port: Annotated[int, typer.Option(help="Port of the access point.")] = 8080,
    state_dir: Annotated[Path, typer.Option("--state-dir")] = DEFAULT_STATE_DIR,
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
        raise fail(str(exc)) from None
    except KeyboardInterrupt:
        pass


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
        serving,
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
        app = create_app(cfg, admin_key=admin_key, on_started=serving)
        server = make_server(app, cfg.gateway.host, cfg.gateway.port, log_level, cfg.gateway)
        run_on_uvloop(server.serve())
    except VerbundError as exc:
        raise fail(str(exc)) from None
    except KeyboardInterrupt:
        pass


def site(
    config: Annotated[Path, typer.Option("--config", "-c", help="The site's config (site.toml).")],
    log_level: Annotated[str, typer.Option()] = "info",
) -> None:
    """Run this computing centre's site agent, described by site.toml."""
    from verbund.agent import create_agent_app, load_site_config, make_agent_server
    from verbund.server import configure_logging, ensure_port_free, run_on_uvloop, stop_on_sigterm

    stop_on_sigterm()
    try:
        cfg = load_site_config(config)
        configure_logging(log_level)
        ensure_port_free(cfg.agent.host, cfg.agent.port)
        app = create_agent_app(cfg, config_path=config)
        run_on_uvloop(make_agent_server(app, cfg, log_level).serve())
    except VerbundError as exc:
        raise fail(str(exc)) from None
    except KeyboardInterrupt:
        pass


def check(config: ConfigOpt) -> None:
    """Validate a federation config or a site agent's site.toml (a file with [site]);
    every problem is listed with its field path."""
    if _is_site_toml(config):
        from verbund.agent import load_site_config

        try:
            site_cfg = load_site_config(config)
        except ConfigError as exc:
            _problems(config, exc)
        typer.echo(
            f"{config}: OK - site {site_cfg.site.name}, {len(site_cfg.backends)} backends, "
            f"{len(site_cfg.models)} models, {len(site_cfg.on_demand)} on demand"
        )
        return
    try:
        cfg = load_config(config)
    except ConfigError as exc:
        _problems(config, exc)
    backends = sum(len(s.backends) for s in cfg.sites)
    typer.echo(
        f"{config}: OK - {len(cfg.sites)} sites, {backends} backends, {len(cfg.models)} models, "
        f"{len(cfg.institutions)} institutions"
    )


def _is_site_toml(path: Path) -> bool:
    import tomllib

    try:
        return "site" in tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError):
        return False  # load_config reports what is wrong with the file


def _problems(config: Path, exc: ConfigError) -> NoReturn:
    typer.secho(f"{config}: {len(exc.problems)} problem(s)", err=True, fg=typer.colors.RED)
    for path, msg in exc.problems:
        typer.echo(f"  {path or '<file>'}: {msg}", err=True)
    raise typer.Exit(1) from None


def register(app: typer.Typer) -> None:
    app.command()(up)
    app.command()(gateway)
    app.command()(site)
    app.command()(check)
