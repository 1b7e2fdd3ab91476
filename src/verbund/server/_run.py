"""Running an access point under uvicorn (uvloop + httptools, with the edge of
:mod:`verbund.server._edge`)."""

from __future__ import annotations

import asyncio
import errno
import gc
import logging
import math
import os
import signal
import socket
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import uvicorn
import uvloop
from starlette.applications import Starlette

from verbund.config import FederationConfig, GatewayConfig
from verbund.errors import VerbundError
from verbund.server._edge import EdgeConfig

__all__ = [
    "CONFIG_ENV",
    "PortBusy",
    "ensure_port_free",
    "make_server",
    "run_on_uvloop",
    "run_workers",
    "stop_on_sigterm",
    "tune_gc",
]


T = TypeVar("T")
CONFIG_ENV = "VERBUND_CONFIG"  # worker processes read the federation config file named here


class PortBusy(VerbundError):
    """The address the access point should listen on is taken."""


def ensure_port_free(host: str, port: int) -> None:
    """Fail early with a clear message instead of uvicorn's traceback."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise PortBusy(
                f"Port {port} on {host} is already in use; choose another with --port."
            ) from None
        raise PortBusy(f"Cannot listen on {host}:{port}: {exc.strerror}.") from None
    finally:
        sock.close()


def _edge_config(app: Any, gateway: GatewayConfig, log_level: str, **kwargs: Any) -> uvicorn.Config:
    """One uvicorn config for both runners. Idle connections close after
    ``gateway.keep_alive_timeout`` (75 s, nginx's default rather than uvicorn's 5 s): the
    side that closes an idle connection races the other side sending a request on it, so
    clients and load balancers (idle timeouts of 60 s are usual) should be the ones to
    close."""
    return EdgeConfig(
        app,
        gateway=gateway,
        loop="uvloop",
        lifespan="on",
        access_log=False,
        log_level=log_level,
        timeout_graceful_shutdown=math.ceil(gateway.shutdown_timeout),
        server_header=False,
        proxy_headers=False,  # client addresses are never used (nor logged)
        timeout_keep_alive=math.ceil(gateway.keep_alive_timeout),  # the edge uses the float
        **kwargs,
    )


def make_server(
    app: Starlette,
    host: str,
    port: int,
    log_level: str = "info",
    gateway: GatewayConfig | None = None,
) -> uvicorn.Server:
    """A single-process server; ``gateway`` gives the edge's bounds (defaults otherwise)."""
    config = _edge_config(
        app, gateway or GatewayConfig(), log_level, host=host, port=port, log_config=None
    )
    return uvicorn.Server(config)


def run_workers(
    config_path: Path, config: FederationConfig, workers: int, log_level: str = "info"
) -> None:
    """Serve one access point from ``workers`` processes sharing one listening socket.

    The store is migrated here, once, before the workers start, so they do not race to
    create the schema. Each worker builds its app with
    :func:`verbund.gateway._factory.app_from_env`.
    """
    from verbund.store import Store

    async def migrate() -> None:
        store = Store(config.store.url)
        try:
            await store.migrate()
        finally:
            await store.aclose()

    asyncio.run(migrate())
    os.environ[CONFIG_ENV] = str(Path(config_path).resolve())
    from uvicorn.supervisors import Multiprocess

    uv = _edge_config(
        "verbund.gateway._factory:app_from_env",  # drains on SIGTERM and tunes GC once started
        config.gateway,
        log_level,
        factory=True,
        workers=workers,
        host=config.gateway.host,
        port=config.gateway.port,
        # uvicorn kills a worker that does not answer its supervisor's ping in time (5 s by
        # default); a worker still importing on a busy host would be killed and restarted
        # in a loop
        timeout_worker_healthcheck=60,
    )
    # uvicorn.run(), less its own config: the edge's bounds travel in EdgeConfig
    Multiprocess(uv, sockets=[uv.bind_socket()]).run()


def configure_logging(level: str = "info", fmt: str = "text") -> None:
    """Text for people at a terminal, JSON (one object a line) for log pipelines."""
    handler = logging.StreamHandler()
    if fmt == "json":
        from verbund.telemetry import JsonFormatter

        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True


def run_on_uvloop(main: Coroutine[Any, Any, T]) -> T:
    """Run a server's main coroutine on uvloop, as uvicorn's own runner would.

    ``asyncio.run(server.serve())`` ignores ``uvicorn.Config(loop="uvloop")``: uvicorn sets
    up the loop only in ``Server.run``, and the pure-Python loop is the slower one."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


def tune_gc() -> None:
    """Once a server process has started: move everything alive now (modules, config,
    federation, caches) out of the cyclic collector's sight, and collect the young
    generation less often. Requests allocate many short-lived containers; with the
    default threshold (700) the collector runs every few requests and its full passes
    walk every long-lived object again."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(7000, 10, 10)


def stop_on_sigterm() -> None:
    """Treat SIGTERM like Ctrl-C, so clean-up code runs.

    uvicorn re-raises the signal that stopped it once it has shut down; with the default
    SIGTERM disposition that would kill the process before its model servers are stopped.
    """

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
