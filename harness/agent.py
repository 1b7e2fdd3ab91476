"""``verbund site --config site.toml`` as a process: its config written, its credentials
in its environment, its readiness awaited, and clients for an access point and an
operator; and :class:`AgentFederation`, sites each run by a real engine and a real agent
(in network namespaces where the machine allows).

A site config is the dict :func:`verbund.agent.parse_site_config` takes; :func:`site_toml`
builds one with the credentials every test agent has (one access point, one operator).
"""

from __future__ import annotations

import ssl
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from harness.federation import write_toml
from harness.netns import Lab, NetSite
from harness.ports import free_port
from harness.processes import ConfiguredServer, Process, child_env
from harness.simengine import MODEL, EngineProcess, EngineSpec

AP_KEY_ENV = "VERBUND_SITE_AP_KEY"
OPERATOR_KEY_ENV = "VERBUND_SITE_OPERATOR_KEY"


def keys_for(site: str) -> dict[str, str]:
    """The harness's credentials of ``site``'s agent (access point, operator), per site
    distinct so that one site's operator key is not another's."""
    return {
        AP_KEY_ENV: f"vbsite-ap-{site}-0123456789abcdef",
        OPERATOR_KEY_ENV: f"vbsite-op-{site}-0123456789abcdef",
    }


def site_toml(
    name: str,
    listen: str,
    state_dir: Path,
    *,
    backends: Sequence[Mapping[str, Any]] = (),
    models: Sequence[Mapping[str, Any]] = (),
    site: Mapping[str, Any] | None = None,
    agent: Mapping[str, Any] | None = None,
    **sections: Any,
) -> dict[str, Any]:
    """A site.toml as a dict: ``[site]``, ``[agent]``, one access point, one operator."""
    return {
        "site": {"name": name, "region": "NW", "jurisdiction": "DE", **(site or {})},
        "agent": {"listen": listen, "state_dir": str(state_dir), **(agent or {})},
        "access_points": [{"name": "ap", "key_env": AP_KEY_ENV}],
        "operators": [{"name": f"op-{name}", "key_env": OPERATOR_KEY_ENV}],
        "backends": [dict(b) for b in backends],
        "models": [dict(m) for m in models],
        **sections,
    }


def agent_argv(config: Path, log_level: str = "warning") -> list[str]:
    return [
        sys.executable, "-m", "verbund.cli", "site",
        "--config", str(config), "--log-level", log_level,
    ]  # fmt: skip


class AgentProcess(ConfiguredServer):
    """A site agent process for ``config`` (a site.toml dict), with its files in ``work``.

    ``url`` is where access points reach it (``https://`` when the config has TLS);
    ``verify`` is the TLS context its clients use then (CA, and a client certificate for
    mutual TLS).
    """

    def __init__(
        self,
        config: Mapping[str, Any],
        work: Path,
        *,
        keys: Mapping[str, str] | None = None,
        env: Mapping[str, str | None] | None = None,
        log_level: str = "warning",
        netns: Sequence[str] = (),
        verify: ssl.SSLContext | bool = False,
    ) -> None:
        self.site = str(config["site"]["name"])
        super().__init__(config, work, work / f"site-{self.site}.toml")
        self.keys = dict(keys or keys_for(self.site))
        self.log = work / f"agent-{self.site}.log"
        tls = bool(config.get("agent", {}).get("tls_cert"))
        self.url = f"{'https' if tls else 'http'}://{config['agent']['listen']}"
        self.verify = verify
        self.process = Process(
            f"agent-{self.site}",
            [*netns, *agent_argv(self.config_path, log_level)],
            self.log,
            env=child_env({**self.keys, **(env or {})}),
            cwd=work,
            new_session=True,
        )

    @property
    def ap_key(self) -> str:
        return self.keys[AP_KEY_ENV]

    @property
    def operator_key(self) -> str:
        return self.keys[OPERATOR_KEY_ENV]

    def start(self, within: float = 60.0) -> AgentProcess:
        return self.launch().wait_ready(within)

    def wait_ready(self, within: float = 60.0) -> AgentProcess:
        auth = {"authorization": f"Bearer {self.ap_key}"}
        self.process.wait_http(f"{self.url}/healthz", within, headers=auth, verify=self.verify)
        return self

    def client(self, key: str | None = None) -> httpx.Client:
        """A client with the access point's credential (or ``key``)."""
        return httpx.Client(
            base_url=self.url,
            trust_env=False,
            timeout=30,
            verify=self.verify,
            headers={"authorization": f"Bearer {key or self.ap_key}"},
        )


# --- a federation of real sites, each run by its own agent -------------------------------

AGENT_PORT = 9100  # inside a site's namespace
PRIVATE_ENGINE_PORT = 8001  # an engine only the site's agent reaches (ingress = "agent")


def agent_key_env(site: str) -> str:
    """The access point's environment variable holding its credential at ``site``."""
    return f"VERBUND_AGENT_KEY_{site.upper().replace('-', '_')}"


@dataclass
class AgentSite:
    """One site: a simulated engine, its agent, and the namespace they run in (if any)."""

    name: str
    region: str
    ingress: str
    engine: EngineProcess
    agent: AgentProcess
    config: dict[str, Any]
    netns: NetSite | None = None

    @property
    def models(self) -> list[str]:
        return [m["name"] for m in self.config["models"]]

    def offer(self, models: Sequence[str]) -> float:
        """Rewrite the site's site.toml to offer ``models`` (its engine serves them); the
        running agent takes it up. The wall time the file was written."""
        self.config["models"] = [
            {"name": m, "kind": "chat", "license": "Apache-2.0"} for m in models
        ]
        self.config["backends"][0]["models"] = list(models)
        tmp = self.agent.config_path.with_suffix(".tmp")
        write_toml(self.config, tmp)
        written = time.time()
        tmp.replace(self.agent.config_path)  # whole or not at all, as config management does
        return written


class AgentFederation:
    """Sites made of a real engine (``verbund.simengine``) and a real site agent, each site
    in its own network namespace when ``lab`` is given (else on the loopback), and the
    access point's config that follows them.

    ``sites`` are (name, region, ingress, extra models): the engine serves ``sim-llm``,
    ``<name>-llm`` and the extra models; the agent offers the first two at start.
    """

    def __init__(
        self,
        work: Path,
        sites: Sequence[tuple[str, str, str, Sequence[str]]],
        *,
        lab: Lab | None = None,
        log_level: str = "warning",
    ) -> None:
        self.work = work
        self.lab = lab
        self.sites: dict[str, AgentSite] = {}
        for name, region, ingress, extra in sites:
            net = lab.add_site(1.0) if lab is not None else None
            prefix = net.exec_prefix if net is not None else []
            host = net.ns_ip if net is not None else "127.0.0.1"
            models = [MODEL, f"{name}-llm"]
            spec = EngineSpec(f"{name}-1", models=[*models, *extra], decode_ms_per_token=2.0)
            if ingress == "agent" and net is not None:  # only the agent reaches it
                engine = EngineProcess(spec, work, "127.0.0.1", PRIVATE_ENGINE_PORT, prefix)
            else:
                engine = EngineProcess(
                    spec, work, host, free_port(host) if not net else 8000, prefix
                )
            listen = f"{host}:{AGENT_PORT if net is not None else free_port()}"
            config = site_toml(
                name,
                listen,
                work / f"state-{name}",
                site={"region": region, "max_data_class": "confidential"},
                backends=[
                    {
                        "name": spec.name,
                        "url": engine.url,
                        "models": models,
                        "max_concurrency": spec.slots,
                    }
                ],
                models=[{"name": m, "kind": "chat", "license": "Apache-2.0"} for m in models],
                routing={"probe_interval": 0.5},
            )
            agent = AgentProcess(config, work, netns=prefix, log_level=log_level)
            self.sites[name] = AgentSite(name, region, ingress, engine, agent, config, net)

    def start(self, within: float = 60.0) -> AgentFederation:
        try:
            for s in self.sites.values():
                s.engine.launch()
                s.agent.launch()
            for s in self.sites.values():
                if s.ingress != "agent" or s.netns is None:  # a private engine: no probe from here
                    s.engine.wait_ready(within)
                s.agent.wait_ready(within)
        except BaseException:
            self.close()
            raise
        return self

    def gateway_sites(self, **per_site: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The access point's ``[[sites]]``: an agent each, no backends of their own."""
        return [
            {
                "name": s.name,
                "agent_url": s.agent.url,
                "agent_key_env": agent_key_env(s.name),
                "ingress": s.ingress,
                **per_site.get(s.name, {}),
            }
            for s in self.sites.values()
        ]

    def gateway_env(self) -> dict[str, str]:
        return {agent_key_env(s.name): s.agent.ap_key for s in self.sites.values()}

    def close(self) -> None:
        for s in self.sites.values():
            s.agent.stop(10)
            s.engine.stop()
