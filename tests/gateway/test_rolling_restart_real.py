"""A rolling restart of two access points behind HAProxy (Debian's package, the shipped
example config) under steady load: SIGTERM drains each in turn, no request fails."""

from __future__ import annotations

import re
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from harness import federation as fed
from harness.gateway import GatewayProcess
from harness.polling import poll
from harness.ports import free_port
from harness.processes import ROOT, Process
from harness.stub_backend import stub_backend

pytestmark = pytest.mark.real


@pytest.fixture
def backend() -> Iterator[int]:
    with stub_backend(0.05) as port:
        yield port


def haproxy_config(front: int, stats: int, servers: dict[str, int]) -> str:
    """The shipped example with local addresses, no TLS, faster checks and fewer
    connections (the same shape otherwise)."""
    text = (ROOT / "deploy/haproxy/haproxy.cfg").read_text()
    text = re.sub(r"(?m)^\s*bind :443 .*$", f"    bind 127.0.0.1:{front}", text)
    text = re.sub(r"(?m)^\s*server .*$\n?", "", text)
    text = text.replace("inter 2s", "inter 250ms")
    text = text.replace("maxconn 20000", "maxconn 2000")  # within a test's file limit
    lines = "".join(f"    server {n} 127.0.0.1:{p} check\n" for n, p in servers.items())
    stats_section = (
        f"\nlisten stats\n    bind 127.0.0.1:{stats}\n    stats enable\n    stats uri /stats\n"
    )
    return text.rstrip("\n") + "\n" + lines + stats_section


def server_status(stats: int) -> dict[str, str]:
    """HAProxy's view of each access point: UP, DOWN, ..."""
    try:
        csv = httpx.get(f"http://127.0.0.1:{stats}/stats;csv", trust_env=False).text
    except httpx.HTTPError:
        return {}  # HAProxy still starting
    rows = [line.split(",") for line in csv.splitlines() if line.startswith("access_points,")]
    return {r[1]: r[17] for r in rows if r[1] != "BACKEND"}


class Load:
    """Steady bounded load through HAProxy: chat requests, every third one streamed."""

    def __init__(self, url: str, key: str) -> None:
        self.url, self.key = url, key
        self.done = threading.Event()
        self.ok = 0
        self.failures: list[str] = []
        self.threads = [threading.Thread(target=self._run, args=(i,)) for i in range(3)]

    def _one(self, client: httpx.Client, stream: bool) -> str | None:
        body = {
            "model": "smol",
            "messages": [{"role": "user", "content": "Hallo"}],
            "stream": stream,
        }
        headers = {"authorization": f"Bearer {self.key}"}
        with client.stream("POST", "/v1/chat/completions", json=body, headers=headers) as r:
            text = r.read().decode()
        if r.status_code != 200:
            return f"HTTP {r.status_code}: {text[:200]}"
        if stream and not text.rstrip().endswith("data: [DONE]"):
            return f"stream ended early: {text[-200:]}"
        return None

    def _run(self, index: int) -> None:
        with httpx.Client(base_url=self.url, timeout=30, trust_env=False) as client:
            for n in range(5000):  # bounded by count, and by the test's time below
                if self.done.is_set():
                    return
                try:
                    error = self._one(client, stream=(n + index) % 3 == 0)
                except httpx.HTTPError as exc:
                    error = f"{type(exc).__name__}: {exc}"
                if error:
                    self.failures.append(error)
                else:
                    self.ok += 1

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        for t in self.threads:
            t.join(60)


def drain_and_restart(ap: GatewayProcess, name: str, stats: int, load: Load) -> None:
    served_before = load.ok
    ap.process.send(signal.SIGTERM)
    # readiness off at once, while the access point still serves new connections
    poll(lambda: httpx.get(ap.url + "/readyz", trust_env=False).status_code == 503,
         f"{name} to answer /readyz with 503", 10)  # fmt: skip
    assert httpx.get(ap.url + "/healthz", trust_env=False).status_code == 200
    poll(lambda: server_status(stats).get(name) == "DOWN", f"HAProxy to take {name} out", 20)
    assert ap.process.wait(60) == 0, ap.process.log_tail()
    ap.start()
    poll(lambda: server_status(stats).get(name) == "UP", f"HAProxy to take {name} back", 30)
    poll(lambda: load.ok > served_before + 20, "requests to flow", 30)


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="needs Debian's haproxy")
def test_a_rolling_restart_behind_haproxy_fails_no_request(tmp_path: Path, backend: int) -> None:
    state = tmp_path / "state"
    aps: dict[str, GatewayProcess] = {}
    for name in ("ap-west", "ap-sued"):
        config = fed.federation(
            name,
            state,  # one store (SQLite) shared by both
            [
                fed.site(
                    "west", "NW", [fed.backend("west-1", f"http://127.0.0.1:{backend}", ["smol"])]
                )
            ],
            port=free_port(),
            gateway={"drain_grace": 3.0, "shutdown_timeout": 20.0},
            models=["smol"],
            institutions=[fed.institution("uni-a")],
        )
        aps[name] = GatewayProcess(config, tmp_path / name, name=name)
    front, stats = free_port(), free_port()
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(
        haproxy_config(front, stats, {n: int(a.url.rsplit(":", 1)[1]) for n, a in aps.items()})
    )
    proxy = Process("haproxy", ["haproxy", "-db", "-f", str(cfg)], tmp_path / "haproxy.log")
    try:
        key = aps["ap-west"].serve().key  # made before ap-sued starts, so both know it
        aps["ap-sued"].serve()
        proxy.start()
        poll(lambda: set(server_status(stats).values()) == {"UP"}, "HAProxy to see both", 30)
        began = time.monotonic()
        with Load(f"http://127.0.0.1:{front}", key) as load:
            poll(lambda: load.ok > 20, "requests to flow", 30)
            for name, ap in aps.items():
                drain_and_restart(ap, name, stats, load)
            assert time.monotonic() - began < 240
        assert load.failures == [], load.failures[:10]
        assert load.ok > 100
    finally:
        proxy.stop()
        for ap in aps.values():
            ap.stop()
