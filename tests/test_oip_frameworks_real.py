"""Domain models of three frameworks over OIP v2, each at two sites: PyTorch (TorchScript),
the same network exported to ONNX (ONNX Runtime), and TensorFlow/Keras, each served by
KServe's model server from its framework's own venv, behind a real access point.

JSON and binary tensors, checks against the model's declared tensors before any model
server is called, a request size limit per model, an OIP batch through the Batch API, and
failover when a model server is killed.
"""

from __future__ import annotations

import json
import os
import random
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from harness.demo import Demo, pid_alive, start_demo
from harness.digits import (
    HEADER,
    LAYOUTS,
    Digits,
    accuracy,
    binary_request,
    digits_of,
    holdout,
    json_request,
)
from harness.federation import backend, federation, institution, site, write_toml
from harness.polling import poll
from verbund.demo import default_demo_config

# six model servers start at once: on a busy 2-core machine their imports take minutes
pytestmark = [pytest.mark.real, pytest.mark.timeout(900)]
MODELS = list(LAYOUTS)
FRAMEWORK = {"digits-torch": "pytorch", "digits-onnx": "onnx", "digits-keras": "keras"}
TRAIN = {"digits-torch": "digits-cnn", "digits-onnx": "digits-cnn", "digits-keras": "digits-keras"}
SITES = ("rz-a", "rz-b")
MAX_BATCH = 4096


def _config(state_dir: Path) -> dict[str, Any]:
    models = [dict(m) for m in default_demo_config()["models"] if m["name"] in MODELS]
    for m in models:
        m["max_batch"] = MAX_BATCH
        m["owner_site"] = "rz-a"
    sites = [
        site(
            name,
            region,
            [
                backend(
                    f"{name}-{FRAMEWORK[m]}",
                    "http://127.0.0.1:0",
                    [m],
                    kind="oip",
                    max_concurrency=4,
                    launch={
                        "kind": "kserve",
                        "framework": FRAMEWORK[m],
                        "train": TRAIN[m],
                        "ready_timeout": 600,
                    },
                )
                for m in MODELS
            ],
            max_data_class="confidential",
        )
        for name, region in zip(SITES, ("NW", "BY"), strict=True)
    ]
    return federation(
        "ap-oip",
        state_dir,
        sites,
        models=models,
        institutions=[institution("uni-a", home_region="NW")],
        # a model server decoding megabytes of JSON tensors (one worker, its event loop
        # busy) sends nothing and answers no probe for seconds on a busy machine; it is
        # not hung (docs/oip.md, known limits)
        routing={"probe_interval": 1.0, "probe_timeout": 10.0, "stall_seconds": 15.0},
        # the tests share a busy 2-core machine: a late event loop must not shed their
        # requests (shedding has its own tests)
        gateway={"shed_after_lag": 0},
        batch={"poll_interval": 0.2},
    )


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    root = tmp_path_factory.mktemp("oip-frameworks")
    config = write_toml(_config(root / "state"), root / "federation.toml")
    d = start_demo(root / "state", within=660, extra=["--config", str(config)])
    yield d
    d.stop()


@pytest.fixture(scope="module")
def digits() -> Digits:
    return holdout()


def client(demo: Demo) -> httpx.Client:
    return httpx.Client(
        base_url=demo.url,
        trust_env=False,
        timeout=120,
        headers={"authorization": f"Bearer {demo.key('uni-a')}"},
    )


def backend_requests(demo: Demo) -> int:
    """Inference requests the model servers have logged (KServe logs every request)."""
    logs = (demo.state_dir / "logs").glob("rz-*.log")
    return sum(p.read_text(errors="replace").count("/infer HTTP") for p in logs)


@pytest.mark.parametrize("model", MODELS)
def test_each_framework_recognises_digits_in_json_and_binary(
    demo: Demo, digits: Digits, model: str
) -> None:
    layout = LAYOUTS[model]
    with client(demo) as c:
        meta = c.get(f"/v2/models/{model}").json()
        assert meta["inputs"] == [{"name": "images", "datatype": "FP32", "shape": [-1, *layout]}]
        card = meta["verbund"]
        assert card["framework"] == FRAMEWORK[model].replace("keras", "tensorflow")
        assert card["license"] == "CC-BY-4.0" and card["training_data"]

        as_json = c.post(f"/v2/models/{model}/infer", json=json_request(digits.images, layout))
        assert as_json.status_code == 200, as_json.text
        assert as_json.headers["x-verbund-site"] in SITES
        json_acc = accuracy(digits_of(as_json.content, None), digits.labels)

        body, headers = binary_request(digits.images, layout)
        as_binary = c.post(f"/v2/models/{model}/infer", content=body, headers=headers)
        assert as_binary.status_code == 200, as_binary.text
        assert as_binary.headers["content-type"] == "application/octet-stream"
        binary_acc = accuracy(
            digits_of(as_binary.content, as_binary.headers[HEADER]), digits.labels
        )
        # binary request, JSON answer
        body, headers = binary_request(digits.images[:20], layout, binary_output=False)
        mixed = c.post(f"/v2/models/{model}/infer", content=body, headers=headers)
        assert mixed.status_code == 200 and HEADER not in mixed.headers
        assert digits_of(mixed.content, None) == digits_of(as_json.content, None)[:20]
    print(f"{model}: held-out accuracy JSON {json_acc:.3f}, binary {binary_acc:.3f}")
    assert json_acc > 0.9 and binary_acc > 0.9
    assert binary_acc == json_acc  # the same tensors, whichever way they travel


def test_wrong_tensors_get_400_naming_the_input_before_any_model_server(
    demo: Demo, digits: Digits
) -> None:
    torch, keras = "digits-torch", "digits-keras"
    good = json_request(digits.images[:2], LAYOUTS[torch])
    cases: list[tuple[str, dict[str, Any], str]] = []
    wrong_shape = json_request(digits.images[:2], [64])
    cases.append((torch, wrong_shape, "inputs[0].shape"))
    wrong_layout = json_request(digits.images[:2], LAYOUTS[torch])  # Keras wants channels last
    cases.append((keras, wrong_layout, "inputs[0].shape"))
    wrong_type = json.loads(json.dumps(good))
    wrong_type["inputs"][0]["datatype"] = "FP64"
    cases.append((torch, wrong_type, "inputs[0].datatype"))
    wrong_name = json.loads(json.dumps(good))
    wrong_name["inputs"][0]["name"] = "pixels"
    cases.append((torch, wrong_name, "inputs[0].name"))
    many = (digits.images * 10)[: MAX_BATCH + 1]
    cases.append((torch, json_request(many, LAYOUTS[torch]), "inputs[0].shape"))
    before = backend_requests(demo)
    with client(demo) as c:
        for model, body, param in cases:
            resp = c.post(f"/v2/models/{model}/infer", json=body)
            assert resp.status_code == 400, (param, resp.text)
            message = resp.json()["error"]
            assert "'images'" in message or "'pixels'" in message, message
        # the same oversized batch as binary tensors
        body, headers = binary_request(many, LAYOUTS[torch])
        resp = c.post(f"/v2/models/{torch}/infer", content=body, headers=headers)
        assert resp.status_code == 400 and f"at most {MAX_BATCH}" in resp.json()["error"]
        # binary sizes that do not add up
        body, headers = binary_request(digits.images[:4], LAYOUTS[torch])
        short = c.post(f"/v2/models/{torch}/infer", content=body[:-4], headers=headers)
        assert short.status_code == 400 and "binary_data_size" in short.json()["error"]
    assert backend_requests(demo) == before  # no model server saw any of them


def test_a_request_size_limit_per_model(demo: Demo, digits: Digits) -> None:
    """JSON image batches above the 4 MiB default pass for a model that allows 16 MiB."""
    rng = random.Random(7)
    noisy = [[p + rng.random() for p in img] for img in (digits.images * 10)[:MAX_BATCH]]
    body = json.dumps(json_request(noisy, LAYOUTS["digits-onnx"])).encode()
    assert 4 * 1024 * 1024 < len(body) < 16 * 1024 * 1024
    headers = {"content-type": "application/json"}
    with client(demo) as c:
        ok = c.post("/v2/models/digits-onnx/infer", content=body, headers=headers)
        assert ok.status_code == 200, ok.text
        assert len(digits_of(ok.content, None)) == MAX_BATCH
        too_big = c.post(
            "/v2/models/digits-onnx/infer", content=body * 4, headers=headers
        )  # 16 MiB and more
        assert too_big.status_code == 413


def test_an_oip_batch_classifies_hundreds_of_images(demo: Demo, digits: Digits) -> None:
    model = "digits-onnx"
    endpoint = f"/v2/models/{model}/infer"
    lines = [
        {
            "custom_id": f"img-{i}",
            "method": "POST",
            "url": endpoint,
            "body": json_request([img], LAYOUTS[model]),
        }
        for i, img in enumerate(digits.images)
    ]
    sdk = openai.OpenAI(base_url=demo.url + "/v1", api_key=demo.key("uni-a"), max_retries=0)
    data = "\n".join(json.dumps(line) for line in lines).encode()
    upload = sdk.files.create(file=("digits.jsonl", data), purpose="batch")
    batch = sdk.batches.create(
        input_file_id=upload.id,
        endpoint=endpoint,  # type: ignore[arg-type]  # the SDK's type lists OpenAI's only
        completion_window="24h",
    )

    def finished() -> bool:
        nonlocal batch
        batch = sdk.batches.retrieve(batch.id)
        return batch.status in ("completed", "failed", "expired", "cancelled")

    poll(finished, "the OIP batch to finish", 240, every=0.5)
    assert batch.status == "completed", batch
    assert batch.request_counts is not None
    assert batch.request_counts.completed == len(lines) and batch.request_counts.failed == 0
    assert batch.output_file_id is not None
    out = [json.loads(x) for x in sdk.files.content(batch.output_file_id).text.splitlines()]
    ids = [o["custom_id"] for o in out]
    assert sorted(ids) == sorted(line["custom_id"] for line in lines)  # each exactly once
    predicted = {
        o["custom_id"]: digits_of(json.dumps(o["response"]["body"]).encode(), None)[0] for o in out
    }
    acc = accuracy([predicted[f"img-{i}"] for i in range(len(lines))], digits.labels)
    print(f"OIP batch of {len(lines)} images: accuracy {acc:.3f}")
    assert acc > 0.9
    with demo.admin() as admin:
        usage = admin.get("/admin/usage", params={"group_by": "endpoint,model"}).json()["data"]
    row = next(r for r in usage if r["model"] == model and r["endpoint"] == "/v2/infer")
    assert row["requests"] >= len(lines) and row["request_bytes"] > 0


@pytest.mark.parametrize("model", MODELS)
def test_inference_goes_on_when_a_model_server_is_killed(
    demo: Demo, digits: Digits, model: str
) -> None:
    layout = LAYOUTS[model]
    with client(demo) as c:
        first = c.post(f"/v2/models/{model}/infer", json=json_request(digits.images[:8], layout))
        assert first.status_code == 200, first.text
        served_by = first.headers["x-verbund-site"]
        victim = demo.backend_pids()[f"{served_by}-{FRAMEWORK[model]}"]
        os.kill(victim, signal.SIGKILL)
        survivor = next(s for s in SITES if s != served_by)
        for i in range(5):
            images = digits.images[i * 50 : (i + 1) * 50]
            body, headers = binary_request(images, layout)
            resp = c.post(f"/v2/models/{model}/infer", content=body, headers=headers)
            assert resp.status_code == 200, resp.text
            assert resp.headers["x-verbund-site"] == survivor
            labels = digits.labels[i * 50 : (i + 1) * 50]
            assert accuracy(digits_of(resp.content, resp.headers[HEADER]), labels) > 0.85
    poll(lambda: not pid_alive(victim), "the killed model server to be gone", 10)
