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
from harness.tls import MutualTLS, TestCA
from tests.conftest import federation_dict
from verbund.config import SiteConfig, parse_config
from verbund.errors import SiteAgentError, SiteAgentUnavailable
from verbund.federation import AgentClient, CatalogueSync, Federation, UpstreamPool
from verbund.store import Store

pytestmark = pytest.mark.real


async def test_mutual_tls(tmp_path: Path) -> None:
    tls = MutualTLS(tmp_path / "ca")
    rogue = TestCA(tmp_path / "rogue", name="Rogue CA").issue("intruder", server=False)
    listen = f"127.0.0.1:{free_port()}"
    config = site_toml("west", listen, tmp_path / "state", agent=tls.agent_section())
    proc = AgentProcess(config, tmp_path, verify=tls.context())
    with proc.start():
        site = SiteConfig(
            name="west", agent_url=proc.url, agent_key_env="AGENT_KEY", **tls.site_section()
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
        async with httpx.AsyncClient(verify=ssl.create_default_context()) as plain:
            with pytest.raises(httpx.ConnectError):
                await plain.get(proc.url + "/healthz")


async def test_relayed_inference_goes_over_the_agents_mutual_tls(tmp_path: Path) -> None:
    """ingress = "agent" with an https agent: the access point's clients of the relay
    trust the agent's CA and present this access point's certificate."""
    tls = MutualTLS(tmp_path / "ca")
    listen = f"127.0.0.1:{free_port()}"
    nowhere = f"http://127.0.0.1:{free_port()}"  # the backend itself: the agent's problem
    config = site_toml(
        "west",
        listen,
        tmp_path / "state",
        agent=tls.agent_section(),
        backends=[{"name": "w1", "url": nowhere, "models": ["smol"]}],
        models=[{"name": "smol", "kind": "chat"}],
    )
    with AgentProcess(config, tmp_path, verify=tls.context()) as proc:
        fed_config = parse_config(
            federation_dict(
                tmp_path,
                sites=[
                    {
                        "name": "west",
                        "region": "NW",
                        "jurisdiction": "DE",
                        "agent_url": proc.url,
                        "agent_key_env": "AGENT_KEY",
                        **tls.site_section(),
                        "ingress": "agent",
                    }
                ],
            )
        )
        fed = Federation(fed_config)
        pool = UpstreamPool(fed, fed_config.routing)
        agent = AgentClient.for_site(fed_config.sites[0], env={"AGENT_KEY": proc.ap_key})
        sync = CatalogueSync(fed, pool, Store(fed_config.store.url), {"west": agent})
        try:
            got = await agent.catalogue()
            assert got is not None
            sync.apply("west", got[0], got[1])
            backend = fed.backends["w1"]
            assert backend.url == f"{proc.url}/relay/w1"
            for target in ("/health", "/v1/models"):  # a probe's way and a request's way
                status, _ = await pool.side.get(backend, target, within=10)
                assert status == 502  # through TLS and the agent; the backend is away
            resp = await pool.upstream(backend).get("/v1/models", {}, read_timeout=10)
            assert resp.status == 502
            await resp.aclose()
        finally:
            await sync.aclose()
            await pool.aclose()


async def test_a_file_moves_to_a_peer_over_the_holders_mutual_tls(tmp_path: Path) -> None:
    """The holder requires client certificates: a receiving agent with a certificate of
    its CA (``peer_cert``) pulls the file; one without gets nothing."""
    from verbund.jobs import SiteLink

    tls = MutualTLS(tmp_path / "ca")
    ca = tls.ca
    peer = ca.issue("agent-nord", server=False)
    holder = site_toml(
        "west",
        f"127.0.0.1:{free_port()}",
        tmp_path / "west",
        site={"max_data_class": "confidential"},
        agent=tls.agent_section(),
    )

    def receiver(name: str, **agent: str) -> AgentProcess:
        config = site_toml(
            name,
            f"127.0.0.1:{free_port()}",
            tmp_path / name,
            site={"max_data_class": "confidential"},
            agent={"peer_ca_file": str(ca.cert), **agent},
        )
        return AgentProcess(config, tmp_path)

    with (
        AgentProcess(holder, tmp_path, verify=tls.context()) as west,
        receiver("nord", peer_cert=str(peer.cert), peer_key=str(peer.key)) as nord,
        receiver("ost") as ost,  # knows the CA, has no certificate of it
    ):
        west_site = SiteConfig(
            name="west", agent_url=west.url, agent_key_env="K", **tls.site_section()
        )
        links = {
            "west": SiteLink(AgentClient.for_site(west_site, env={"K": west.ap_key})),
            "nord": SiteLink(AgentClient("nord", nord.url, nord.ap_key)),
            "ost": SiteLink(AgentClient("ost", ost.url, ost.ap_key)),
        }
        data = b"a,b,label\n1,2,0\n" * 1000
        try:
            await links["west"].blobs.put("f-held", data)

            async def move(to: str) -> dict[str, object]:
                grant = await links["west"].grant("f-held", to, "confidential")
                source = {"site": "west", "url": west.url, "key": "f-held",
                          "grant": grant["grant"]}  # fmt: skip
                return await links[to].fetch("in-moved", "confidential", source)

            assert (await move("nord"))["bytes"] == len(data)
            assert (tmp_path / "nord" / "files" / "in-moved").read_bytes() == data
            with pytest.raises(SiteAgentError) as refused:
                await move("ost")
            assert refused.value.code == "peer_unavailable"  # the handshake failed
            assert not (tmp_path / "ost" / "files" / "in-moved").exists()
        finally:
            for link in links.values():
                await link.client.aclose()
