"""Running an access point: the uvicorn process runner, its HTTP edge and its drain."""

from __future__ import annotations

from verbund.server._drain import Drain, serving
from verbund.server._edge import EdgeConfig, EdgeProtocol
from verbund.server._errors import error_handlers
from verbund.server._run import (
    CONFIG_ENV,
    PortBusy,
    configure_logging,
    ensure_port_free,
    make_server,
    run_on_uvloop,
    run_workers,
    stop_on_sigterm,
    tune_gc,
)

__all__ = [
    "CONFIG_ENV",
    "Drain",
    "EdgeConfig",
    "EdgeProtocol",
    "PortBusy",
    "configure_logging",
    "ensure_port_free",
    "error_handlers",
    "make_server",
    "run_on_uvloop",
    "run_workers",
    "serving",
    "stop_on_sigterm",
    "tune_gc",
]
