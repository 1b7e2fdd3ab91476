"""Several real access points (``verbund gateway`` processes) sharing PostgreSQL and Redis,
in front of synthetic engine processes (``python -m verbund.simengine``)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.realdemo import free_port

ADMIN_KEY = "vbadmin-cluster-test-0123456789abcdef"
MODEL = "sim-model"


def gateway_argv(config: Path) -> list[str]:
    """The command line of one access point process (``verbund gateway``) in tests."""
    return [
        sys.executable,
        "-m",
        "verbund.cli",
        "gateway",
        "--config",
        str(config),
        "--log-level",
        "warning",
    ]


def wait_http(url: str, within: float = 30.0, status: int = 200) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1.0, trust_env=False).status_code == status:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} not answering {status} within {within}s")


@dataclass
class Proc:
    name: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            if sig in (signal.SIGKILL, signal.SIGTERM):
                self.process.wait(30)


def start_engine(name: str, tmp: Path, *, slots: int = 16, decode_ms: float = 1.0) -> Proc:
    port = free_port()
    log = tmp / f"{name}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "verbund.simengine",
                "--port",
                str(port),
                "--name",
                name,
                "--model",
                MODEL,
                "--slots",
                str(slots),
                "--decode-ms-per-token",
                str(decode_ms),
                "--prefill-ms-per-token",
                "0.05",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    p = Proc(name, port, proc, log)
    wait_http(p.url + "/v1/models")
    return p


def federation_toml(
    name: str,
    port: int,
    state_dir: Path,
    store_url: str,
    redis_url: str,
    engines: list[Proc],
    institutions: str = "",
) -> str:
    sites = ""
    for i, e in enumerate(engines):
        sites += f"""
[[sites]]
name = "site-{i}"
region = "R{i}"
jurisdiction = "DE"
max_data_class = "sensitive"
  [[sites.backends]]
  name = "{e.name}"
  url = "{e.url}"
  models = ["{MODEL}"]
  max_concurrency = 16
  metrics_url = "{e.url}/metrics"
"""
    return f"""
[gateway]
name = "{name}"
listen = "127.0.0.1:{port}"
state_dir = "{state_dir}"
[store]
url = "{store_url}"
[coordination]
redis_url = "{redis_url}"
[routing]
probe_interval = 0.5
{sites}
[[models]]
name = "{MODEL}"
{institutions or DEFAULT_INSTITUTIONS}
"""


DEFAULT_INSTITUTIONS = """
[[institutions]]
id = "uni-a"
home_region = "R0"
[[institutions]]
id = "uni-q"
requests_per_minute = 40
"""


@dataclass
class Cluster:
    tmp: Path
    store_url: str
    redis_url: str
    engines: list[Proc]
    institutions: str = ""
    gateways: list[Proc] = field(default_factory=list)

    def start_gateway(self, name: str, port: int | None = None) -> Proc:
        port = port or free_port()
        state = self.tmp / name
        state.mkdir(exist_ok=True)
        cfg = state / "federation.toml"
        cfg.write_text(
            federation_toml(
                name, port, state, self.store_url, self.redis_url, self.engines, self.institutions
            )
        )
        log = state / "gateway.log"
        with log.open("ab") as out:
            proc = subprocess.Popen(
                gateway_argv(cfg),
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "VERBUND_ADMIN_KEY": ADMIN_KEY},
            )
        gw = Proc(name, port, proc, log)
        wait_http(gw.url + "/readyz", within=60)
        self.gateways = [g for g in self.gateways if g.name != name] + [gw]
        return gw

    def admin(self, gw: Proc) -> httpx.Client:
        return httpx.Client(
            base_url=gw.url,
            trust_env=False,
            timeout=30,
            headers={"authorization": f"Bearer {ADMIN_KEY}"},
        )

    def create_key(self, gw: Proc, institution: str) -> dict[str, Any]:
        with self.admin(gw) as a:
            r = a.post("/admin/keys", json={"institution": institution, "name": "test"})
            r.raise_for_status()
            return dict(r.json())

    def stop(self) -> None:
        for p in [*self.gateways, *self.engines]:
            p.kill(signal.SIGTERM if p in self.gateways else signal.SIGKILL)


def chat(url: str, key: str, **kw: Any) -> httpx.Response:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, **kw}
    return httpx.post(
        url + "/v1/chat/completions",
        json=body,
        timeout=30,
        trust_env=False,
        headers={"authorization": f"Bearer {key}"},
    )


def poll(check: Any, within: float, step: float = 0.02) -> float:
    """Seconds until ``check()`` was true; raises after ``within``."""
    began = time.monotonic()
    while time.monotonic() - began < within:
        if check():
            return time.monotonic() - began
        time.sleep(step)
    raise AssertionError(f"condition not met within {within}s")


def in_one_minute(run: Any) -> Any:
    """Run a quota test inside one minute window (quota windows are calendar minutes).

    If the run crossed into the next minute, the counters were reset halfway and the
    outcome means nothing: wait for a fresh minute and run it again, once.
    """
    if time.time() % 60 > 40:
        time.sleep(60.2 - time.time() % 60)
    began = int(time.time() // 60)
    result = run()
    if int(time.time() // 60) == began:
        return result
    time.sleep(60.2 - time.time() % 60)
    began = int(time.time() // 60)
    result = run()
    assert int(time.time() // 60) == began, "the run takes longer than a minute"
    return result
