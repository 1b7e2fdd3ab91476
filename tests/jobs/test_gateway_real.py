"""`verbund gateway` as operators run it: a TOML config with a local runner, the openai
SDK over HTTP, scikit-learn training, the CLI, and a SIGKILL of the access point."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest

from tests.jobs.helpers import digits, kill_leftovers
from tests.realdemo import free_port
from verbund.config import load_config

pytestmark = pytest.mark.real
ADMIN = "vbadmin-real-jobs-0123456789abcdef"


def toml(state: Path, port: int) -> str:
    return f"""
[gateway]
name = "ap-jobs"
listen = "127.0.0.1:{port}"
home_site = "rz-west"
state_dir = "{state}"

[store]
url = "sqlite+aiosqlite:///{state}/verbund.db"

[training]
poll_interval = 0.2

[[sites]]
name = "rz-west"
region = "NW"
max_data_class = "sensitive"

  [sites.runner]
  kind = "local"
  cpus = 1
  memory_mb = 2048

[[sites]]
name = "rz-ost"
region = "SN"
max_data_class = "internal"

  [sites.runner]
  kind = "local"
  cpus = 1
  memory_mb = 2048

[[institutions]]
id = "uni-a"
home_region = "NW"

[[institutions]]
id = "uni-b"
home_region = "SN"
"""


@dataclass
class Running:
    config: Path
    url: str
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "verbund.cli", "gateway", "--config", str(self.config)],
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "VERBUND_ADMIN_KEY": ADMIN},
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()
            try:
                if httpx.get(self.url + "/healthz", timeout=1, trust_env=False).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError("gateway did not start:\n" + self.log.read_text())

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(30)

    def cli(self, *args: str, key: str | None = None) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "VERBUND_URL": self.url, "VERBUND_ADMIN_KEY": ADMIN}
        if key:
            env["VERBUND_API_KEY"] = key
        return subprocess.run(
            [sys.executable, "-m", "verbund.cli", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[Running]:
    state = tmp_path / "state"
    port = free_port()
    config = tmp_path / "federation.toml"
    config.write_text(toml(state, port))
    g = Running(config, f"http://127.0.0.1:{port}", tmp_path / "gateway.log")
    g.start()
    try:
        yield g
    finally:
        g.stop()
        kill_leftovers(load_config(config))


def wait_status(c: openai.OpenAI, job_id: str, want: tuple[str, ...], within: float = 120.0) -> str:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        status = c.fine_tuning.jobs.retrieve(job_id).status
        if status in want:
            return status
        time.sleep(0.2)
    raise AssertionError(f"{job_id} never reached {want}")


def test_sdk_cli_and_a_killed_access_point(gateway: Running, tmp_path: Path) -> None:
    created = gateway.cli("keys", "create", "--institution", "uni-a", "--json")
    assert created.returncode == 0, created.stderr
    key = json.loads(created.stdout)["key"]
    train, held_x, held_y = digits()
    files = tmp_path / "state" / "files" / "uni-a"
    files.mkdir(parents=True)
    (files / "file-digits").write_text(train)
    c = openai.OpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0)

    job = c.fine_tuning.jobs.create(
        model="sklearn-classifier",
        training_file="file-digits",
        suffix="digits",
        hyperparameters={"n_epochs": 20, "batch_size": 32},
    )
    deadline = time.monotonic() + 120
    while True:  # until training has made some progress
        events = c.fine_tuning.jobs.list_events(job.id, limit=5).data
        if any(e.type == "metrics" for e in events):
            break
        assert time.monotonic() < deadline, gateway.log.read_text()
        time.sleep(0.2)
    gateway.stop(signal.SIGKILL)  # the access point dies; the job at the site does not
    gateway.start()
    assert wait_status(c, job.id, ("succeeded", "failed")) == "succeeded"
    done = c.fine_tuning.jobs.retrieve(job.id)
    assert done.fine_tuned_model == "ft:sklearn-classifier:uni-a:digits"
    steps = []
    page = c.fine_tuning.jobs.list_events(job.id, limit=100)
    for e in page.data:
        if e.type == "metrics":
            steps.append(e.data["step"])
    assert sorted(steps) == list(range(1, 21))  # every step once, across the crash

    assert done.fine_tuned_model in [m.id for m in c.models.list().data]
    r = httpx.post(
        f"{gateway.url}/v2/models/{done.fine_tuned_model}/infer",
        json={
            "inputs": [
                {"name": "x", "shape": [len(held_x), 64], "datatype": "FP32", "data": held_x}
            ]
        },
        headers={"authorization": f"Bearer {key}"},
        timeout=30,
        trust_env=False,
    )
    assert r.status_code == 200, r.text
    predicted = r.json()["outputs"][0]["data"]
    assert sum(p == t for p, t in zip(predicted, held_y, strict=True)) / len(held_y) > 0.85

    listed = gateway.cli("jobs", "list")
    assert listed.returncode == 0, listed.stderr
    assert job.id in listed.stdout and "succeeded" in listed.stdout and "rz-west" in listed.stdout
    own = gateway.cli("jobs", "list", "--json", key=key)
    assert [j["id"] for j in json.loads(own.stdout)] == [job.id]
    shown = json.loads(gateway.cli("jobs", "show", job.id).stdout)
    assert shown["result_model"] == done.fine_tuned_model
    events_out = gateway.cli("jobs", "events", job.id)
    assert "The job has successfully completed" in events_out.stdout
    refused = gateway.cli("jobs", "cancel", job.id)
    assert refused.returncode == 1 and "cannot be cancelled" in refused.stderr
    usage = gateway.cli("usage", "--group-by", "institution,site,endpoint", "--format", "json")
    rows = [r for r in json.loads(usage.stdout) if r["endpoint"] == "/v1/fine_tuning/jobs"]
    assert rows[0]["site"] == "rz-west" and rows[0]["cpu_seconds"] > 0
