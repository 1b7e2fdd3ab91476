"""Mutual TLS between an access point and a real agent process, with certificates the
test makes: no client certificate, or one from another CA, fails the handshake; the
right certificate still needs the bearer credential."""

from __future__ import annotations

import ssl
from pathlib import Path

import httpx
import pytest

from harness.agent import AgentProcess, site_toml
from harness.ports import free_port
from harness.tls import TestCA
from verbund.config import SiteConfig
from verbund.errors import SiteAgentError, SiteAgentUnavailable
from verbund.federation import AgentClient

pytestmark = pytest.mark.real


async def test_mutual_tls(tmp_path: Path) -> None:
    ca = TestCA(tmp_path / "ca")
    server = ca.issue("agent-west", server=True)
    client = ca.issue("ap-1", server=False)
    rogue = TestCA(tmp_path / "rogue", name="Rogue CA").issue("intruder", server=False)
    listen = f"127.0.0.1:{free_port()}"
    config = site_toml(
        "west",
        listen,
        tmp_path / "state",
        agent={
            "tls_cert": str(server.cert),
            "tls_key": str(server.key),
            "tls_client_ca": str(ca.cert),
        },
    )
    ctx = ssl.create_default_context(cafile=str(ca.cert))
    ctx.load_cert_chain(str(client.cert), str(client.key))
    proc = AgentProcess(config, tmp_path, verify=ctx)
    with proc.start():
        site = SiteConfig(
            name="west",
            agent_url=proc.url,
            agent_key_env="AGENT_KEY",
            agent_ca_file=str(ca.cert),
            agent_client_cert=str(client.cert),
            agent_client_key=str(client.key),
        )
        good = AgentClient.for_site(site, env={"AGENT_KEY": proc.ap_key})
        wrong_key = AgentClient.for_site(site, env={"AGENT_KEY": "vbsite-forged-0123456789ab"})
        no_cert = AgentClient.for_site(
            site.model_copy(update={"agent_client_cert": "", "agent_client_key": ""}),
            env={"AGENT_KEY": proc.ap_key},
        )
        rogue_cert = AgentClient.for_site(
            site.model_copy(
                update={"agent_client_cert": str(rogue.cert), "agent_client_key": str(rogue.key)}
            ),
            env={"AGENT_KEY": proc.ap_key},
        )
        try:
            assert (await good.healthz())["caller"]["role"] == "access_point"
            with pytest.raises(SiteAgentError, match="credential"):
                await wrong_key.healthz()
            for refused in (no_cert, rogue_cert):
                with pytest.raises(SiteAgentUnavailable):
                    await refused.healthz()
        finally:
            for c in (good, wrong_key, no_cert, rogue_cert):
                await c.aclose()
        # and a client that does not know the agent's CA does not trust the agent
        with (
            pytest.raises(httpx.ConnectError),
            httpx.Client(verify=ssl.create_default_context()) as c,
        ):
            c.get(proc.url + "/healthz")
