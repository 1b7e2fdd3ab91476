"""Training data and uploaded files for training-job runs, and the site agents that run
the jobs (one ``verbund site`` process per site with a runner)."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness.agent import AgentProcess, site_toml
from harness.ports import free_port
from verbund.config import FederationConfig


def put_file(
    cfg: FederationConfig,
    institution: str,
    file_id: str,
    text: str,
    data_class: str | None = None,
) -> None:
    """What the Files API does with an upload: store it for this institution."""
    folder = Path(cfg.gateway.state_dir) / "files" / institution
    folder.mkdir(parents=True, exist_ok=True)
    (folder / file_id).write_text(text)
    if data_class is not None:
        (folder / f"{file_id}.json").write_text(json.dumps({"data_class": data_class}))


def blobs_csv(n: int = 90, seed: int = 1) -> str:
    """Three well separated classes in four features: any classifier gets them right."""
    rnd = random.Random(seed)
    centres = {0: (0.0, 0.0, 5.0, 5.0), 1: (8.0, 0.0, 0.0, 3.0), 2: (0.0, 9.0, 2.0, 0.0)}
    lines = ["f0,f1,f2,f3,label"]
    for i in range(n):
        label = i % 3
        values = [c + rnd.gauss(0, 0.5) for c in centres[label]]
        lines.append(",".join(f"{v:.3f}" for v in values) + f",{label}")
    return "\n".join(lines) + "\n"


def agent_key_env(site: str) -> str:
    """The variable an access point reads its credential at ``site``'s agent from."""
    return "VERBUND_AGENT_KEY_" + site.upper().replace("-", "_").replace(".", "_")


class SiteAgents:
    """One ``verbund site`` process for every site of a federation dict with a ``runner``.

    :meth:`attach` moves each such site's runner out of the access point's config into its
    agent's ``site.toml`` (with the site's facts and the federation's ``[training]``),
    names the agent in the site (``agent_url``, ``agent_key_env``) and returns the
    environment the access point needs (its credentials at the agents).
    """

    def __init__(self, work: Path) -> None:
        self.work = work
        self.agents: dict[str, AgentProcess] = {}
        self.workdirs: list[Path] = []

    def attach(
        self, federation: dict[str, Any], only: Sequence[str] | None = None
    ) -> dict[str, str]:
        env: dict[str, str] = {}
        for site in federation["sites"]:
            if "runner" not in site or (only is not None and site["name"] not in only):
                continue
            name = site["name"]
            state = self.work / f"site-{name}"
            runner = dict(site.pop("runner"))
            runner.setdefault("workdir", str(state / "jobs"))
            self.workdirs.append(Path(runner["workdir"]))
            facts = {
                k: site[k]
                for k in ("region", "jurisdiction", "max_data_class", "certifications")
                if k in site
            }
            config = site_toml(
                name,
                f"127.0.0.1:{free_port()}",
                state,
                site=facts,
                runner=runner,
                training=dict(federation.get("training", {})),
            )
            agent = AgentProcess(config, self.work)
            self.agents[name] = agent
            site["agent_url"] = agent.url
            site["agent_key_env"] = agent_key_env(name)
            env[agent_key_env(name)] = agent.ap_key
        return env

    def start(self) -> SiteAgents:
        for agent in self.agents.values():
            agent.launch()
        for agent in self.agents.values():
            agent.wait_ready()
        return self

    def stop(self) -> None:
        for agent in self.agents.values():
            if agent.process.started:
                agent.stop()
        kill_jobs(self.workdirs)


def kill_jobs(workdirs: Sequence[Path]) -> None:
    """Stop every job process still running in these runner work folders."""
    for workdir in workdirs:
        for pid_file in Path(workdir).glob("*/wrapper.pid"):
            with contextlib.suppress(ValueError, OSError, KeyError, IndexError):
                info = json.loads(pid_file.read_text())
                pid = int(info["pid"])
                stat = Path(f"/proc/{pid}/stat").read_text()
                if stat.rsplit(")", 1)[1].split()[19] == info["start"]:  # not a reused pid
                    os.killpg(pid, signal.SIGKILL)
