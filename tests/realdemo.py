"""Starting the real embedded demo federation (`verbund up`) as a subprocess for tests."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Demo:
    process: subprocess.Popen[bytes]
    state_dir: Path
    info: dict[str, Any]
    log: Path

    @property
    def url(self) -> str:
        return str(self.info["url"])

    def key(self, institution: str) -> str:
        return str(self.info["keys"][institution])

    def backend_pids(self) -> dict[str, int]:
        return {name: int(b["pid"]) for name, b in self.info["backends"].items()}

    def admin(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.url,
            trust_env=False,
            timeout=30,
            headers={"authorization": f"Bearer {self.info['admin_key']}"},
        )

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
        return self.process.wait()


def start_demo(state_dir: Path, *, within: float = 240.0, extra: list[str] | None = None) -> Demo:
    """Run `verbund up` and wait (polling with a deadline) until it wrote demo.json."""
    port = free_port()
    log = state_dir.parent / f"{state_dir.name}-up.log"
    cmd = [
        sys.executable,
        "-m",
        "verbund.cli",
        "up",
        "--port",
        str(port),
        "--state-dir",
        str(state_dir),
        *(extra or []),
    ]
    with log.open("wb") as out:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ})
    deadline = time.monotonic() + within
    demo_json = state_dir / "demo.json"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"verbund up exited {proc.returncode}:\n{log.read_text()}")
        if demo_json.exists():
            info = json.loads(demo_json.read_text())
            if info.get("pid") == proc.pid:
                return Demo(proc, state_dir, info, log)
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"verbund up not ready after {within}s:\n{log.read_text()}")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still answers kill(0); look at its state
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.split(")")[-1].split()[0] != "Z"
