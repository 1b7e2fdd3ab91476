"""Simulated engines (``python -m verbund.simengine``) as processes, and sites made of them.

An engine can be killed, stalled (SIGSTOP), resumed and started again on its port; its
``/_sim`` endpoints give its statistics and inject faults.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from harness import federation as fed
from harness.ports import free_port
from harness.processes import ROOT, Process

MODEL = "sim-llm"


@dataclass
class EngineSpec:
    """How to run one simulated engine (see ``python -m verbund.simengine --help``)."""

    name: str
    models: Sequence[str] = (MODEL,)
    slots: int = 4
    prefill_ms_per_token: float = 0.2
    decode_ms_per_token: float = 20.0
    prefix_cache_tokens: int = 32768
    metrics_style: str = "vllm"

    def args(self) -> list[str]:
        out = [
            "--name", self.name,
            "--slots", str(self.slots),
            "--prefill-ms-per-token", str(self.prefill_ms_per_token),
            "--decode-ms-per-token", str(self.decode_ms_per_token),
            "--prefix-cache-tokens", str(self.prefix_cache_tokens),
            "--metrics-style", self.metrics_style,
        ]  # fmt: skip
        for m in self.models:
            out += ["--model", m]
        return out

    def backend(self, url: str, **fields: Any) -> fed.Section:
        """This engine as a backend of a federation config, reached at ``url``; ``fields``
        add to or override its metrics URL and capacity (the engine's slots)."""
        defaults = {"metrics_url": url + "/metrics", "max_concurrency": self.slots}
        return fed.backend(self.name, url, self.models, **{**defaults, **fields})


class EngineProcess:
    """One simengine process on a fixed port; it can be restarted there after a kill."""

    def __init__(
        self,
        spec: EngineSpec,
        log_dir: Path,
        host: str = "127.0.0.1",
        port: int | None = None,
        prefix: Sequence[str] = (),
        bind: tuple[str, int] | None = None,
    ) -> None:
        self.spec = spec
        self.host = host  # where tests and the access point reach it
        self.port = port or free_port(host)
        self.bind = bind or (self.host, self.port)  # where it listens (behind a relay: differs)
        cmd = [
            *prefix,  # e.g. ["ip", "netns", "exec", "ns1"]
            sys.executable, "-m", "verbund.simengine",
            "--host", self.bind[0], "--port", str(self.bind[1]), *spec.args(),
        ]  # fmt: skip
        log = log_dir / f"engine-{spec.name}.log"
        self.process = Process(f"engine {spec.name}", cmd, log, cwd=ROOT)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process.running

    def start(self, within: float = 30.0) -> EngineProcess:
        """Launch and wait until it answers (stopped again if it does not)."""
        return self.launch().wait_ready(within)

    def launch(self) -> EngineProcess:
        """Start the process without waiting for it (start several, then wait for each)."""
        self.process.start()
        return self

    def wait_ready(self, within: float = 30.0) -> EngineProcess:
        self.process.wait_http(self.url + "/health", within)
        return self

    def kill(self) -> float:
        """SIGKILL; the wall time it was sent."""
        return self.process.kill()

    def stall(self) -> float:
        """SIGSTOP: connections are accepted by the kernel and never answered."""
        return self.process.pause()

    def resume(self) -> float:
        return self.process.resume()

    def call(self, method: str, path: str, **kw: Any) -> Any:
        r = httpx.request(method, self.url + path, timeout=10, trust_env=False, **kw)
        r.raise_for_status()
        return r.json()

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = self.call("GET", "/_sim/stats")
        return result

    def fault(self, mode: str, **kw: Any) -> None:
        self.call("POST", "/_sim/fault", json={"mode": mode, **kw})

    def stop(self) -> None:
        self.process.stop(10)


@dataclass
class Site:
    """A site of simulated engines: (spec, the URL the access point reaches it at)."""

    name: str
    region: str
    engines: list[tuple[EngineSpec, str]] = field(default_factory=list)


def engine_federation(
    state_dir: Path,
    port: int,
    sites: Sequence[Site],
    *,
    policy: str = "score",
    routing: dict[str, Any] | None = None,
    models: Iterable[str] = (MODEL,),
    home_site: str = "",
) -> fed.Section:
    """A federation of engine sites: each engine one backend (metrics URL, capacity, and
    resumable streams), the institution ``uni-a`` at the first site's region."""
    return fed.federation(
        "ap-sim",
        state_dir,
        [
            fed.site(
                s.name,
                s.region,
                [spec.backend(url, resume="continue_final_message") for spec, url in s.engines],
                max_data_class="confidential",
            )
            for s in sites
        ],
        port=port,
        gateway={"home_site": home_site},
        routing={"policy": policy, **(routing or {})},
        models=models,
        institutions=[fed.institution("uni-a", name="Universität A", home_region=sites[0].region)],
    )
