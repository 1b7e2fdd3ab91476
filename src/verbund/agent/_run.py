"""Serving a site agent under uvicorn, with TLS and, optionally, mutual TLS.

With ``[agent] tls_client_ca`` set, uvicorn's ``ssl_cert_reqs`` is ``CERT_REQUIRED``:
the TLS handshake refuses a caller without a certificate signed by that CA before any
HTTP is read; the bearer credential is checked on top, so a stolen certificate alone
does not do.
"""

from __future__ import annotations

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
    return uvicorn.Server(uv)
