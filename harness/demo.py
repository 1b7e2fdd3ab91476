"""The embedded demo federation (``verbund up``: llama.cpp model servers and an access
point) as a process, for tests and benchmarks that need real models."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from harness.polling import poll
from harness.ports import free_port
from harness.processes import Process


@dataclass
class Demo:
    """A running ``verbund up``; ``info`` is what it wrote to ``demo.json``."""

    process: Process
    state_dir: Path
    info: dict[str, Any]

    @property
    def log(self) -> Path | None:
        return self.process.log

    @property
    def url(self) -> str:
        return str(self.info["url"])

    def key(self, institution: str) -> str:
        return str(self.info["keys"][institution])

    def backend_pids(self) -> dict[str, int]:
        return {name: int(b["pid"]) for name, b in self.info["backends"].items()}

    def backends_of(self, site: str) -> list[dict[str, Any]]:
        """The admin API's view of ``site``'s backends (url, healthy, ...)."""
        with self.admin() as admin:
            sites = admin.get("/admin/sites").json()["sites"]
        return list(next(s for s in sites if s["name"] == site).get("backends", []))

    def admin(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.url,
            trust_env=False,
            timeout=30,
            headers={"authorization": f"Bearer {self.info['admin_key']}"},
        )

    def stop(self) -> int | None:
        """SIGTERM to ``verbund up`` alone (it stops its model servers itself)."""
        return self.process.stop(30)


def start_demo(state_dir: Path, *, within: float = 240.0, extra: list[str] | None = None) -> Demo:
    """Run ``verbund up`` and wait until it has written ``demo.json`` for this process."""
    cmd = [
        sys.executable, "-m", "verbund.cli", "up",
        "--port", str(free_port()), "--state-dir", str(state_dir), *(extra or []),
    ]  # fmt: skip
    log = state_dir.parent / f"{state_dir.name}-up.log"
    proc = Process("verbund up", cmd, log, env={**os.environ}).start()
    demo_json = state_dir / "demo.json"
    info: dict[str, Any] = {}

    def written() -> bool:
        nonlocal info
        proc.check()
        if demo_json.exists():
            with contextlib.suppress(json.JSONDecodeError):  # half written
                info = json.loads(demo_json.read_text())
        return info.get("pid") == proc.pid

    try:
        poll(written, f"verbund up to write {demo_json}", within, every=0.1)
    except BaseException:
        proc.stop(30)
        raise
    return Demo(proc, state_dir, info)


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie does not count)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.split(")")[-1].split()[0] != "Z"
