"""The demo federation's site agents: one ``verbund site`` process per demo site.

``verbund up`` describes each demo site once, in ``demo.toml``. Here every site becomes
what a computing centre would run: a site.toml (its facts, the backends ``verbund up``
launched for it, the models they serve, its prices) and a site agent process with its own
state directory and store under ``<state-dir>/sites/<site>``. The access point's config
then names each site's agent instead of listing its backends, so the demo access point
learns its sites the way every access point does: from their catalogues. One site
(``rz-ost``) takes inference through its agent (``ingress = "agent"``), the others
directly, so the demo shows both.

Credentials are made here (random; the operator keys are kept in ``demo.json`` and
reused): the access point's per site, given to the agent and to this process's
environment, and one operator key per site, printed for the demo's users.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from verbund.config import FederationConfig, parse_config

__all__ = ["DemoAgent", "plan_agents"]

AP_KEY_ENV = "VERBUND_DEMO_AP_KEY"  # in each agent's environment
OPERATOR_KEY_ENV = "VERBUND_DEMO_OPERATOR_KEY"
AGENT_INGRESS = {"rz-ost": "agent"}  # the site whose compute is reached through its agent
# on-demand models of the demo (local launcher, short idle timeout): a newcomer sees
# ``stopped`` -> first request -> ``ready`` -> ``stopped`` again half a minute later
ON_DEMAND: dict[str, list[dict[str, Any]]] = {
    "rz-west": [
        {
            "model": "smollm2-135m-ondemand",
            "launcher": "local",
            "cpus": 1,
            "memory_mb": 1024,
            "n_ctx": 2048,
            "idle_timeout": 30.0,
            "max_instances": 1,
        }
    ]
}
ON_DEMAND_MODEL = {
    "kind": "chat",
    "description": "SmolLM2-135M-Instruct, started on the first request, stopped when idle",
    "license": "Apache-2.0",
    "context_length": 2048,
}


@dataclass(frozen=True)
class DemoAgent:
    """One demo site's agent as :mod:`verbund.demo` launches it: its site.toml written,
    its command, its environment (the credentials) and where it answers."""

    site: str
    port: int
    config_path: Path
    operator_key: str
    ap_key: str = field(repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def argv(self) -> list[str]:
        return [sys.executable, "-m", "verbund.cli", "site", "--config", str(self.config_path),
                "--log-level", "warning"]  # fmt: skip

    @property
    def env(self) -> dict[str, str]:
        return {AP_KEY_ENV: self.ap_key, OPERATOR_KEY_ENV: self.operator_key}

    @property
    def auth(self) -> dict[str, str]:
        """The access point's credential, as its requests carry it (readiness too)."""
        return {"authorization": f"Bearer {self.ap_key}"}


def agent_key_env(site: str) -> str:
    """The access point's environment variable with its credential at ``site``'s agent."""
    return "VERBUND_DEMO_AGENT_KEY_" + site.upper().replace("-", "_")


def _previous_operator_keys(state_dir: Path) -> dict[str, str]:
    with contextlib.suppress(ValueError, OSError, AttributeError):
        sites = json.loads((state_dir / "demo.json").read_text()).get("sites", {})
        return {name: str(s["operator_key"]) for name, s in sites.items() if "operator_key" in s}
    return {}


def site_toml(
    config: FederationConfig, site: str, listen: str, state_dir: Path, access_point: str
) -> dict[str, Any]:
    """The site.toml of one demo site, from the federation config's description of it."""
    sc = config.site(site)
    assert sc is not None
    served = {m for b in sc.backends for m in b.models}
    data: dict[str, Any] = {
        "site": {
            "name": sc.name,
            "region": sc.region,
            "jurisdiction": sc.jurisdiction,
            "max_data_class": sc.max_data_class.value,
            "certifications": list(sc.certifications),
        },
        # the demo's local engines stop with it
        "agent": {"listen": listen, "state_dir": str(state_dir), "keep_instances": False},
        "access_points": [{"name": access_point, "key_env": AP_KEY_ENV}],
        "operators": [{"name": f"{site}-operator", "key_env": OPERATOR_KEY_ENV}],
        "backends": [
            # the launch stays with verbund up; what it implied for requests (the chat
            # dialect of a llama.cpp server) is said explicitly to the agent
            {
                **b.model_dump(mode="json", exclude={"launch"}, exclude_none=True),
                "dialect": b.chat_dialect,
            }
            for b in sc.backends
        ],
        "models": [
            m.model_dump(mode="json", exclude_none=True) for m in config.models if m.name in served
        ],
        "routing": {"probe_interval": config.routing.probe_interval},
    }
    if sc.prices is not None:
        data["prices"] = sc.prices.model_dump(mode="json")
    if sc.runner is not None:  # training jobs run at the site, by its agent
        data["runner"] = sc.runner.model_dump(mode="json")
        data["training"] = config.training.model_dump(mode="json")
    if site in ON_DEMAND:
        data["on_demand"] = ON_DEMAND[site]
        data["models"] += [{"name": e["model"], **ON_DEMAND_MODEL} for e in ON_DEMAND[site]]
    return data


def plan_agents(
    config: FederationConfig, state_dir: Path, free_port: Callable[[], int]
) -> tuple[FederationConfig, list[DemoAgent]]:
    """Write each site's site.toml and make its agent's credentials; return the access
    point's config with agents in place of the sites' backends (the agents announce
    those), and the agents to launch."""
    previous = _previous_operator_keys(state_dir)
    data = config.model_dump(mode="json", exclude_none=True)
    agents: list[DemoAgent] = []
    for site in data["sites"]:
        name = site["name"]
        folder = state_dir / "sites" / name
        folder.mkdir(parents=True, exist_ok=True)
        agent = DemoAgent(
            name,
            free_port(),
            folder / "site.toml",
            operator_key=previous.get(name) or "vbsiteop-" + secrets.token_urlsafe(24),
            ap_key="vbsite-" + secrets.token_urlsafe(24),
        )
        listen = agent.url.removeprefix("http://")
        toml = site_toml(config, name, listen, folder, config.gateway.name)
        agent.config_path.write_text(tomli_w.dumps(toml), encoding="utf-8")
        agents.append(agent)
        os.environ[agent_key_env(name)] = agent.ap_key  # this process is the access point
        site["backends"] = []
        site.pop("runner", None)  # the agent runs the site's jobs, not the access point
        site.update(
            agent_url=agent.url,
            agent_key_env=agent_key_env(name),
            ingress=AGENT_INGRESS.get(name, "direct"),
        )
    return parse_config(data), agents
