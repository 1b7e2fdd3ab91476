"""A real on-demand federation: a site agent (``verbund site``) whose model starts as an
``sbatch`` job on a real Slurm (llama.cpp, SmolLM2-135M, 1 CPU), behind a real access
point (``verbund gateway``) with a key for ``uni-a``. The on-demand tests and the cold
start benchmark share it, and the streaming request they time and read.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from harness.agent import AgentProcess, agent_key_env, site_toml
from harness.federation import federation, institution
from harness.gateway import GatewayProcess
from harness.ports import free_port
from harness.slurm import SlurmCluster

__all__ = ["MODEL", "SITE", "Load", "on_demand_federation", "on_demand_view", "stream_chat"]

SITE = "hpc"
MODEL = "smol-od"
LOAD_MOST = 120.0  # seconds any load loop runs at most


@contextlib.contextmanager
def on_demand_federation(
    work: Path,
    slurm: SlurmCluster,
    *,
    routing: dict[str, Any] | None = None,
    log_level: str = "warning",
    keep_instances: bool = False,
    **spec: Any,
) -> Iterator[tuple[AgentProcess, GatewayProcess]]:
    """The agent and the access point (its :attr:`~GatewayProcess.key` made), stopped
    when the block ends; ``spec`` adds to or overrides the model's ``[[on_demand]]``.
    Its instances stop with the agent unless ``keep_instances`` (a restart test): the
    next test on the same cluster starts from an empty queue."""
    site = site_toml(
        SITE,
        f"127.0.0.1:{free_port()}",
        work / "site-state",
        agent={"keep_instances": keep_instances},
        models=[{"name": MODEL, "kind": "chat"}],
        capacity={"cpus": 2, "memory_mb": 4000},
        on_demand=[
            {
                "model": MODEL, "launcher": "slurm", "slurm_conf": str(slurm.conf),
                "cpus": 1, "memory_mb": 1000, "n_ctx": 512, **spec,
            }
        ],
    )  # fmt: skip
    with AgentProcess(site, work, log_level=log_level) as agent:  # started; stopped after
        config = federation(
            "ap-od",
            work / "ap",
            [{"name": SITE, "agent_url": agent.url, "agent_key_env": agent_key_env(SITE)}],
            port=free_port(),
            institutions=[institution("uni-a")],
            routing=routing or {},
        )
        gw = GatewayProcess(config, work / "ap", env={agent_key_env(SITE): agent.ap_key})
        try:
            gw.start(path="/healthz")
            gw.key = gw.create_key("uni-a")["key"]
            yield agent, gw
        finally:
            gw.stop()


def on_demand_view(agent: AgentProcess) -> dict[str, Any]:
    """The agent's ``GET /on-demand`` for the model: status, instances, node time."""
    with agent.client() as c:
        got: dict[str, Any] = c.get("/on-demand").json()["models"][MODEL]
    return got


def stream_chat(gw: GatewayProcess, max_tokens: int = 8) -> tuple[int, list[tuple[float, str]]]:
    """One streaming chat request for the model: its status and its non-empty lines,
    each with the seconds from sending to its arrival."""
    began = time.monotonic()
    with (
        httpx.Client(base_url=gw.url, trust_env=False, timeout=300) as c,
        c.stream(
            "POST",
            "/v1/chat/completions",
            headers={"authorization": f"Bearer {gw.key}"},
            json={
                "model": MODEL,
                "messages": [{"role": "user", "content": "Say hello."}],
                "max_tokens": max_tokens,
                "stream": True,
            },
        ) as r,
    ):
        lines = [(time.monotonic() - began, line) for line in r.iter_lines() if line]
    return r.status_code, lines


class Load:
    """``workers`` clients sending requests one after another until stopped (bounded)."""

    def __init__(self, gw: GatewayProcess, workers: int) -> None:
        self.gw = gw
        self.statuses: list[int] = []
        self.errors: list[str] = []  # the bodies of answers other than 200 (to say why)
        self.sites: set[str] = set()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run) for _ in range(workers)]

    def _run(self) -> None:
        end = time.monotonic() + LOAD_MOST
        with httpx.Client(base_url=self.gw.url, trust_env=False, timeout=120) as c:
            while not self._stop.is_set() and time.monotonic() < end:
                r = c.post(
                    "/v1/chat/completions",
                    headers={"authorization": f"Bearer {self.gw.key}"},
                    json={
                        "model": MODEL,
                        "messages": [{"role": "user", "content": "Count to three."}],
                        "max_tokens": 12,
                    },
                )
                self.statuses.append(r.status_code)
                if r.status_code != 200:
                    self.errors.append(r.text[:300])

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(LOAD_MOST + 30)
