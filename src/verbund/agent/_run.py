"""Serving a site agent under uvicorn, with TLS and, optionally, mutual TLS.

With ``[agent] tls_client_ca`` set, uvicorn's ``ssl_cert_reqs`` is ``CERT_REQUIRED``:
the TLS handshake refuses a caller without a certificate signed by that CA before any
HTTP is read; the bearer credential is checked on top, so a stolen certificate alone
does not do.
"""

from __future__ import annotations

import asyncio
import contextlib
from types import FrameType

import uvicorn
from starlette.applications import Starlette

from verbund.agent._config import SiteAgentConfig

__all__ = ["make_agent_server"]


def make_agent_server(
    app: Starlette, config: SiteAgentConfig, log_level: str = "info"
) -> uvicorn.Server:
    a = config.agent
    tls: dict[str, object] = {}
    if a.tls_cert:
        tls = {"ssl_certfile": a.tls_cert, "ssl_keyfile": a.tls_key}
        if a.tls_client_ca:
            tls.update(ssl_ca_certs=a.tls_client_ca, ssl_cert_reqs=a.ssl_cert_reqs)
    uv = uvicorn.Config(
        app,
        host=a.host,
        port=a.port,
        loop="uvloop",
        lifespan="on",
        access_log=False,
        log_level=log_level,
        log_config=None,
        server_header=False,
        proxy_headers=False,
        timeout_keep_alive=75,
        timeout_graceful_shutdown=10,
        **tls,  # type: ignore[arg-type]
    )
    return _AgentServer(uv, app)


class _AgentServer(uvicorn.Server):
    """uvicorn's server, which on SIGTERM/SIGINT also answers held catalogue long-polls:
    uvicorn waits for requests in flight before it stops, and a long-poll would hold it
    for up to ``max_wait_seconds``. Relayed streams still get the graceful period."""

    def __init__(self, config: uvicorn.Config, app: Starlette) -> None:
        super().__init__(config)
        self._app = app

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        catalogue = self._app.state.services.catalogue
        with contextlib.suppress(RuntimeError):  # no loop running: nothing is held
            asyncio.get_running_loop().call_soon_threadsafe(catalogue.release)
        super().handle_exit(sig, frame)
