"""Training through site agents, as operators run them: `verbund gateway` and one `verbund
site` per site, each its own process. Data and models of a class above the access point's
stay at their site; access points and agents may die without losing a job or a file."""

from __future__ import annotations

import json
import secrets
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from harness import federation as fed
from harness.gateway import GatewayProcess
from harness.polling import poll
from harness.ports import free_port
from harness.services import Postgres
from harness.training import SiteAgents, blobs_csv
from tests.jobs.helpers import digits

pytestmark = pytest.mark.real

RUNNER = {"kind": "local", "cpus": 1, "memory_mb": 2048}


def federation(state: Path, port: int, store: dict[str, Any] | None = None) -> dict[str, Any]:
    """west may hold sensitive data, ost internal; the access point itself internal."""
    return fed.federation(
        "ap-1",
        state,
        [
            fed.site("west", "NW", max_data_class="sensitive", runner=dict(RUNNER)),
            fed.site("ost", "SN", max_data_class="internal", runner=dict(RUNNER)),
        ],
        port=port,
        gateway={"home_site": "ost", "max_data_class": "internal"},
        training={"poll_interval": 0.2},
        institutions=[
            fed.institution("uni-a", home_region="NW"),
            fed.institution("uni-b", home_region="SN", allowed_regions=["SN"]),
        ],
        **({"store": store} if store else {}),
    )


class Federation:
    """An access point and its sites' agents, started and stopped together."""

    def __init__(self, tmp: Path, store: dict[str, Any] | None = None) -> None:
        self.tmp = tmp
        self.config = federation(tmp / "ap" / "state", free_port(), store)
        self.agents = SiteAgents(tmp / "agents")
        self.env = self.agents.attach(self.config)
        self.ap = GatewayProcess(self.config, tmp / "ap", env=self.env)
        self.clients: list[httpx.Client] = []

    def client(self, url: str, key: str, **headers: str) -> httpx.Client:
        c = httpx.Client(
            base_url=url,
            headers={"authorization": f"Bearer {key}", **headers},
            trust_env=False,
            timeout=60,
        )
        self.clients.append(c)
        return c

    def start(self) -> Federation:
        self.agents.start()
        self.ap.start(path="/healthz")
        return self

    def stop(self) -> None:
        for c in self.clients:
            c.close()
        self.ap.stop()
        self.agents.stop()


@pytest.fixture
def federated(tmp_path: Path) -> Iterator[Federation]:
    f = Federation(tmp_path)
    try:
        yield f.start()
    finally:
        f.stop()


def upload(c: httpx.Client, text: str, name: str = "data.csv", **headers: str) -> httpx.Response:
    return c.post(
        "/v1/files",
        data={"purpose": "fine-tune"},
        files={"file": (name, text.encode(), "text/csv")},
        headers=headers,
    )


def wait_job(c: httpx.Client, job_id: str, want: tuple[str, ...], within: float = 180) -> Any:
    seen: dict[str, Any] = {}

    def reached() -> bool:
        seen.update(c.get(f"/v1/fine_tuning/jobs/{job_id}").json())
        return seen.get("status") in want

    poll(reached, f"{job_id} to reach {want}", within, every=0.2)
    return seen


def files_under(root: Path) -> Iterator[Path]:
    return (p for p in root.rglob("*") if p.is_file())


def holding(root: Path, needle: bytes) -> list[Path]:
    """The files under ``root`` whose bytes contain ``needle``."""
    return [p for p in files_under(root) if needle in p.read_bytes()]


def test_sensitive_training_data_and_model_never_reach_the_access_point(
    federated: Federation,
) -> None:
    ap = federated.ap
    key_a, key_b = ap.create_key("uni-a")["key"], ap.create_key("uni-b")["key"]
    canary = "canary" + secrets.token_hex(8)
    data = blobs_csv().replace("f3", canary, 1)
    a = federated.client(ap.url, key_a)
    # above the access point's own class: streamed to a site that may hold it
    up = upload(a, data, **{"X-Verbund-Data-Class": "sensitive"})
    assert up.status_code == 200, up.text
    file_id = up.json()["id"]
    assert a.get(f"/v1/files/{file_id}/content").content == data.encode()  # streamed back
    r = a.post(
        "/v1/fine_tuning/jobs",
        json={"model": "centroid-classifier", "training_file": file_id, "suffix": "clinic"},
    )
    assert r.status_code == 200, r.text
    job = r.json()
    assert job["verbund"]["data_class"] == "sensitive"
    done = wait_job(a, job["id"], ("succeeded", "failed"))
    assert done["status"] == "succeeded", done["error"]
    assert done["verbund"]["site"] == "west"
    model = done["fine_tuned_model"]
    rows = [[8.0, 0.0, 0.0, 3.0], [0.0, 9.0, 2.0, 0.0]]
    body = {"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP64", "data": rows}]}
    answer = a.post(f"/v2/models/{model}/infer", json=body)
    assert answer.status_code == 200, answer.text
    assert answer.json()["outputs"][0]["data"] == [1, 2]
    assert answer.headers["x-verbund-site"] == "west"
    b = federated.client(ap.url, key_b)
    other = b.post(f"/v2/models/{model}/infer", json=body)
    assert other.status_code == 404 and other.json()["error"]["code"] == "model_not_found"
    assert model not in [m["id"] for m in b.get("/v1/models").json()["data"]]

    west = federated.tmp / "agents" / "site-west"
    artefact = (west / "models" / job["id"] / "model.json").read_bytes()
    assert holding(west, canary.encode())  # the test can see the canary where it is
    ap_dir = federated.tmp / "ap"  # its state directory, its SQLite store, its log
    ap.stop()  # the store's last writes are on disk
    assert holding(ap_dir, canary.encode()) == []
    assert holding(ap_dir, artefact) == []
    assert holding(federated.tmp / "agents" / "site-ost", canary.encode()) == []


def test_data_above_every_allowed_site_is_refused_before_a_byte_is_stored(
    federated: Federation,
) -> None:
    ap = federated.ap
    key_b = ap.create_key("uni-b")["key"]  # region SN only: ost, internal
    b = federated.client(ap.url, key_b)
    r = upload(b, "a,label\n1,0\n", **{"X-Verbund-Data-Class": "sensitive"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "policy_violation"
    assert "west" in r.json()["error"]["message"]  # excluded: uni-b may use SN only
    assert list((federated.tmp / "agents" / "site-ost" / "files").iterdir()) == []


def test_a_site_agent_refuses_data_above_its_class_whoever_asks(federated: Federation) -> None:
    ost = federated.agents.agents["ost"]
    with ost.client() as c:
        r = c.put("/blobs/f-forged", content=b"x", headers={"x-verbund-data-class": "sensitive"})
        assert r.status_code == 403 and r.json()["error"]["code"] == "data_class_refused"
        spec = {
            "id": "trjob-forged",
            "institution": "uni-a",
            "recipe": "centroid-classifier",
            "training_file": "f-forged",
            "data_class": "confidential",
            "resources": {"cpus": 1},
        }
        r = c.post("/jobs", json=spec)
        assert r.status_code == 403 and r.json()["error"]["code"] == "data_class_refused"
    with ost.client(key="not-a-credential-of-this-site") as c:
        assert c.put("/blobs/f-forged", content=b"x").status_code == 401
    assert list((federated.tmp / "agents" / "site-ost" / "files").iterdir()) == []


def test_an_access_point_killed_mid_job_leaves_it_to_another(tmp_path: Path, pg: Postgres) -> None:
    f = Federation(tmp_path, store={"url": pg.url})
    second = json.loads(json.dumps(f.config))  # the same federation, a second access point
    second["gateway"]["name"] = "ap-2"
    second["gateway"]["listen"] = f"127.0.0.1:{free_port()}"
    ap2 = GatewayProcess(second, tmp_path / "ap-2", env=f.env, name="gateway-2")
    try:
        f.start()
        key = f.ap.create_key("uni-a")["key"]  # in the shared store before ap-2 starts
        ap2.start(path="/healthz")
        train, held_x, held_y = digits()
        a = f.client(f.ap.url, key)
        file_id = upload(a, train, "digits.csv").json()["id"]
        r = a.post(
            "/v1/fine_tuning/jobs",
            json={
                "model": "sklearn-classifier",
                "training_file": file_id,
                "suffix": "digits",
                "hyperparameters": {"n_epochs": 20, "batch_size": 32},
            },
        )
        assert r.status_code == 200, r.text
        job_id = r.json()["id"]
        poll(
            lambda: any(
                e["type"] == "metrics"
                for e in a.get(f"/v1/fine_tuning/jobs/{job_id}/events").json()["data"]
            ),
            "training to report progress",
            120,
            every=0.2,
        )
        f.ap.process.send(signal.SIGKILL)
        b = f.client(ap2.url, key)
        listed = b.get("/v1/fine_tuning/jobs").json()["data"]
        assert [j["id"] for j in listed] == [job_id]
        done = wait_job(b, job_id, ("succeeded", "failed"))
        assert done["status"] == "succeeded", done["error"]
        steps = [
            e["data"]["step"]
            for e in b.get(f"/v1/fine_tuning/jobs/{job_id}/events?limit=100").json()["data"]
            if e["type"] == "metrics"
        ]
        assert sorted(steps) == list(range(1, 21))
        body = {
            "inputs": [
                {"name": "x", "shape": [len(held_x), 64], "datatype": "FP32", "data": held_x}
            ]
        }
        served = b.post(f"/v2/models/{done['fine_tuned_model']}/infer", json=body)
        assert served.status_code == 200, served.text
        predicted = served.json()["outputs"][0]["data"]
        assert sum(p == t for p, t in zip(predicted, held_y, strict=True)) / len(held_y) > 0.85
    finally:
        ap2.stop()
        f.stop()


def test_a_site_agent_killed_mid_job_and_mid_upload_loses_nothing(
    federated: Federation,
) -> None:
    ap, west = federated.ap, federated.agents.agents["west"]
    files = federated.tmp / "agents" / "site-west" / "files"
    key = ap.create_key("uni-a")["key"]
    a = federated.client(ap.url, key, **{"X-Verbund-Data-Class": "sensitive"})
    train, _, _ = digits()
    file_id = upload(a, train, "digits.csv").json()["id"]
    r = a.post(
        "/v1/fine_tuning/jobs",
        json={
            "model": "sklearn-classifier",
            "training_file": file_id,
            "hyperparameters": {"n_epochs": 20, "batch_size": 32},
        },
    )
    job_id = r.json()["id"]
    poll(
        lambda: a.get(f"/v1/fine_tuning/jobs/{job_id}").json()["verbund"]["metrics"] is not None,
        "training to report progress",
        120,
        every=0.2,
    )

    # a large upload streaming through the access point to the agent...
    def body() -> Iterator[bytes]:
        yield b'--b\r\ncontent-disposition: form-data; name="purpose"\r\n\r\nfine-tune\r\n'
        yield b'--b\r\ncontent-disposition: form-data; name="file"; filename="big.csv"\r\n'
        yield b"content-type: text/csv\r\n\r\n"
        for _ in range(400):
            yield b"1,2,3,0\n" * 8192
            time.sleep(0.02)
        yield b"\r\n--b--\r\n"

    outcome: dict[str, Any] = {}

    def send() -> None:
        try:
            outcome["status"] = a.post(
                "/v1/files",
                content=body(),
                headers={"content-type": "multipart/form-data; boundary=b"},
            ).status_code
        except httpx.HTTPError as exc:
            outcome["error"] = exc

    sender = threading.Thread(target=send)
    sender.start()
    poll(lambda: any(p.name.startswith(".tmp-") for p in files.iterdir()), "upload", 60)
    west.kill()  # ...and the agent SIGKILLed mid-job and mid-upload
    sender.join(60)
    assert outcome.get("status", 500) >= 500  # the client hears of it; nothing is stored
    poll(
        lambda: a.get(f"/v1/fine_tuning/jobs/{job_id}").json()["verbund"]["note"] is not None,
        "the job to note its agent's absence",
        30,
        every=0.2,
    )
    west.start()
    assert [f["filename"] for f in a.get("/v1/files").json()["data"]] == ["digits.csv"]
    assert not any(p.name.startswith(".tmp-") for p in files.iterdir())  # no half file
    done = wait_job(a, job_id, ("succeeded", "failed"))
    assert done["status"] == "succeeded", done["error"]
    assert done["verbund"]["note"] is None
    events = a.get(f"/v1/fine_tuning/jobs/{job_id}/events?limit=100").json()["data"]
    steps = sorted(e["data"]["step"] for e in events if e["type"] == "metrics")
    assert steps == list(range(1, 21))  # each once, across the agent's death
