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
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import tomli_w

from verbund.config import FederationConfig, parse_config
from verbund.errors import VerbundError
from verbund.jobs import die_with_parent, free_port, stop_process

__all__ = ["DemoAgent", "start_agents", "wait_agents"]

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


@dataclass
class DemoAgent:
    site: str
    url: str
    operator_key: str
    process: subprocess.Popen[bytes]
    log_path: Path
    ap_key: str = field(repr=False, default="")
    started: float = field(default_factory=time.monotonic)
    ready_seconds: float | None = None

    def terminate(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()

    def stop(self, timeout: float = 5.0) -> None:
        stop_process(self.process, timeout)


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
        "agent": {"listen": listen, "state_dir": str(state_dir)},
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


def start_agents(
    config: FederationConfig, state_dir: Path
) -> tuple[FederationConfig, list[DemoAgent]]:
    """Write each site's site.toml and start its agent; return the access point's config
    with agents in place of the sites' backends (the agents announce those)."""
    previous = _previous_operator_keys(state_dir)
    data = config.model_dump(mode="json", exclude_none=True)
    agents: list[DemoAgent] = []
    try:
        for site in data["sites"]:
            name = site["name"]
            folder = state_dir / "sites" / name
            folder.mkdir(parents=True, exist_ok=True)
            url = f"http://127.0.0.1:{free_port()}"
            toml = site_toml(config, name, url.removeprefix("http://"), folder, config.gateway.name)
            path = folder / "site.toml"
            path.write_text(tomli_w.dumps(toml), encoding="utf-8")
            ap_key = "vbsite-" + secrets.token_urlsafe(24)
            operator_key = previous.get(name) or "vbsiteop-" + secrets.token_urlsafe(24)
            log_path = state_dir / "logs" / f"agent-{name}.log"
            log_path.parent.mkdir(parents=True, exist_ok=True)
            with log_path.open("ab") as out:
                proc = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
                    [sys.executable, "-m", "verbund.cli", "site", "--config", str(path),
                     "--log-level", "warning"],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env={**os.environ, AP_KEY_ENV: ap_key, OPERATOR_KEY_ENV: operator_key},
                    preexec_fn=die_with_parent,
                )  # fmt: skip
            agents.append(DemoAgent(name, url, operator_key, proc, log_path, ap_key))
            os.environ[agent_key_env(name)] = ap_key  # this process is the access point
            site["backends"] = []
            site.pop("runner", None)  # the agent runs the site's jobs, not the access point
            site.update(
                agent_url=url,
                agent_key_env=agent_key_env(name),
                ingress=AGENT_INGRESS.get(name, "direct"),
            )
    except BaseException:
        for a in agents:
            a.stop()
        raise
    return parse_config(data), agents


async def wait_agents(agents: list[DemoAgent], within: float = 180.0) -> None:
    """Until every agent answers its access point's credential."""
    import asyncio

    deadline = time.monotonic() + within
    pending = list(agents)
    async with httpx.AsyncClient(timeout=2.0, trust_env=False) as client:
        while pending:
            for a in list(pending):
                if a.process.poll() is not None:
                    raise VerbundError(
                        f"The site agent of {a.site} exited with code "
                        f"{a.process.returncode}; see {a.log_path}."
                    )
                with contextlib.suppress(httpx.HTTPError):
                    r = await client.get(
                        a.url + "/healthz", headers={"authorization": f"Bearer {a.ap_key}"}
                    )
                    if r.status_code == 200:
                        a.ready_seconds = round(time.monotonic() - a.started, 2)
                        pending.remove(a)
            if not pending:
                return
            if time.monotonic() > deadline:
                names = ", ".join(a.site for a in pending)
                raise VerbundError(f"Site agents not ready after {within:.0f}s: {names}.")
            await asyncio.sleep(0.1)
