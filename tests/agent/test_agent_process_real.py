"""``verbund site`` as a process: a bad site.toml is a clear error, and a stop is not
held up by access points' long-polls (they are answered at once)."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest

from harness.agent import AgentProcess, site_toml
from harness.federation import write_toml
from harness.polling import poll
from harness.ports import free_port
from harness.processes import child_env

pytestmark = pytest.mark.real


def test_a_bad_site_toml_names_the_field(tmp_path: Path) -> None:
    config = site_toml("west", f"127.0.0.1:{free_port()}", tmp_path / "s")
    config["models"] = [{"name": "m", "data_classes": ["sensitive"]}]
    path = write_toml(config, tmp_path / "site.toml")
    out = subprocess.run(
        [sys.executable, "-m", "verbund.cli", "site", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        env=child_env(),
        check=False,
    )
    assert out.returncode == 1
    assert "max_data_class" in out.stderr and "Traceback" not in out.stderr


def test_a_stop_answers_held_long_polls(tmp_path: Path) -> None:
    agent = AgentProcess(site_toml("west", f"127.0.0.1:{free_port()}", tmp_path / "s"), tmp_path)
    agent.start()
    try:
        with agent.client() as c:
            etag = c.get("/catalogue").headers["etag"]
        answers: list[int] = []

        def long_poll() -> None:
            with agent.client() as c:
                r = c.get("/catalogue", params={"wait": "60"}, headers={"if-none-match": etag})
                answers.append(r.status_code)

        poller = threading.Thread(target=long_poll)
        poller.start()
        with agent.client() as c:  # the poll is held at the agent (for up to 60 s)
            poll(lambda: c.get("/healthz").json()["catalogue"]["long_polls"] == 1, "poll", 30)
        assert agent.stop(within=20) == 0
        poller.join(5)
        assert answers == [304]  # answered, not cut off, and well before its 60 s
    finally:
        agent.stop()
