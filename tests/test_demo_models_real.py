"""Model diversity in the real demo federation: a scikit-learn model over OIP v2 (MLServer)
at two sites, embeddings from llama.cpp, and the model catalogue."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from harness import digits as digit_set
from harness.demo import Demo, pid_alive, start_demo
from harness.polling import poll

pytestmark = pytest.mark.real
DIGITS = "digits"
EMBED = "smollm2-135m-embed"
DIGIT_BACKENDS = {"rz-west": "west-digits-1", "rz-sued": "sued-digits-1"}
# one per framework on KServe: PyTorch at rz-west, ONNX at rz-sued, Keras at rz-ost
FRAMEWORK_MODELS = {"digits-torch": "rz-west", "digits-onnx": "rz-sued", "digits-keras": "rz-ost"}


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    d = start_demo(tmp_path_factory.mktemp("models") / "state")
    yield d
    d.stop()


@pytest.fixture(scope="module")
def holdout() -> tuple[list[list[float]], list[int]]:
    """The digit images the served model was not trained on."""
    data = digit_set.holdout()
    return data.images, data.labels


def oip(demo: Demo, institution: str = "uni-a") -> httpx.Client:
    return httpx.Client(
        base_url=demo.url,
        trust_env=False,
        timeout=60,
        headers={"authorization": f"Bearer {demo.key(institution)}"},
    )


def infer_body(images: list[list[float]]) -> dict[str, Any]:
    return {
        "inputs": [
            {
                "name": "images",
                "shape": [len(images), 64],
                "datatype": "FP64",
                "data": [p for img in images for p in img],
            }
        ]
    }


def usage_by(demo: Demo, group_by: str) -> list[dict[str, Any]]:
    with demo.admin() as admin:
        return list(admin.get("/admin/usage", params={"group_by": group_by}).json()["data"])


def test_digits_through_the_access_point_are_recognised(
    demo: Demo, holdout: tuple[list[list[float]], list[int]]
) -> None:
    images, labels = holdout
    assert len(images) == 450
    with oip(demo) as c:
        meta = c.get(f"/v2/models/{DIGITS}")
        assert meta.status_code == 200, meta.text
        assert meta.json()["inputs"][0] == {"name": "images", "datatype": "FP64", "shape": [-1, 64]}
        resp = c.post(f"/v2/models/{DIGITS}/infer", json=infer_body(images))
    assert resp.status_code == 200, resp.text
    assert resp.headers["x-verbund-site"] in DIGIT_BACKENDS
    out = resp.json()["outputs"][0]
    assert out["shape"] == [450, 1]
    predicted = out["data"]
    accuracy = sum(int(p) == y for p, y in zip(predicted, labels, strict=True)) / len(labels)
    assert accuracy > 0.9, accuracy


def test_versioned_route_health_and_usage(
    demo: Demo, holdout: tuple[list[list[float]], list[int]]
) -> None:
    images, labels = holdout
    before = {r["endpoint"]: r for r in usage_by(demo, "endpoint")}.get("/v2/infer")
    with oip(demo) as c:
        assert c.get("/v2/health/live").json() == {"live": True}
        assert c.get("/v2/health/ready").json() == {"ready": True}
        assert c.get(f"/v2/models/{DIGITS}/ready").json() == {"name": DIGITS, "ready": True}
        body = infer_body(images[:5])
        resp = c.post(f"/v2/models/{DIGITS}/versions/v1/infer", json=body)
        assert resp.status_code == 200, resp.text
        assert [int(p) for p in resp.json()["outputs"][0]["data"]] == labels[:5]
        unknown_version = c.post(f"/v2/models/{DIGITS}/versions/v9/infer", json=body)
        assert unknown_version.status_code == 404
        assert isinstance(unknown_version.json()["error"], str)
        bad = c.post(f"/v2/models/{DIGITS}/infer", json={"inputs": "nope"})
        assert bad.status_code == 400 and isinstance(bad.json()["error"], str)
    after = {r["endpoint"]: r for r in usage_by(demo, "endpoint")}["/v2/infer"]
    # every authenticated request leaves a record: the ok inference, the unknown version
    # (an error from the backend) and the bad body (rejected before anything was sent)
    assert after["requests"] == (before["requests"] if before else 0) + 3
    grew = after["request_bytes"] - (before["request_bytes"] if before else 0)
    assert grew >= 2 * len(json.dumps(body, separators=(",", ":")))
    assert after["response_bytes"] > (before["response_bytes"] if before else 0)
    assert after["prompt_tokens"] == (before["prompt_tokens"] if before else 0)


def test_embeddings_with_the_openai_sdk(demo: Demo) -> None:
    before = {r["model"]: r for r in usage_by(demo, "model")}.get(EMBED)
    c = openai.OpenAI(base_url=demo.url + "/v1", api_key=demo.key("uni-a"), max_retries=0)
    raw = c.embeddings.with_raw_response.create(
        model=EMBED, input=["Hallo Welt", "Die Hochschule liegt am Rhein."]
    )
    out = raw.parse()  # the SDK asks for base64 and decodes; llama.cpp answers floats
    assert raw.headers["x-verbund-site"] == "rz-ost"
    assert [len(d.embedding) for d in out.data] == [576, 576]
    assert all(isinstance(v, float) for v in out.data[0].embedding)
    assert out.data[0].embedding != out.data[1].embedding
    assert out.usage.prompt_tokens > 0
    floats = c.embeddings.create(model=EMBED, input="Hallo Welt", encoding_format="float")
    assert len(floats.data[0].embedding) == 576
    after = {r["model"]: r for r in usage_by(demo, "model")}[EMBED]
    assert after["requests"] == (before["requests"] if before else 0) + 2
    assert after["prompt_tokens"] >= (before["prompt_tokens"] if before else 0) + (
        out.usage.prompt_tokens
    )
    with pytest.raises(openai.BadRequestError) as wrong_kind:
        c.embeddings.create(model="smollm2-135m", input="x")
    assert wrong_kind.value.code == "unsupported_model"


def test_catalogue_shows_kinds_sites_and_policy(demo: Demo) -> None:
    with oip(demo) as c:
        models = {m["id"]: m for m in c.get("/v1/models").json()["data"]}
    assert set(models) == {
        "smollm2-135m",
        "smollm2-135m-ondemand",
        EMBED,
        DIGITS,
        *FRAMEWORK_MODELS,
    }
    digits = models[DIGITS]["verbund"]
    assert digits["kind"] == "oip" and digits["available"] is True
    assert digits["owner_site"] == "rz-west" and digits["license"] == "CC-BY-4.0"
    assert digits["modalities"] == ["image"]
    assert {s["name"] for s in digits["sites"]} == set(DIGIT_BACKENDS)
    assert models[EMBED]["verbund"]["kind"] == "embedding"
    assert models[EMBED]["verbund"]["data_classes"] == ["internal"]
    # sensitive data: only rz-west qualifies; the embedding model (rz-ost only) is hidden
    with oip(demo, "klinikum-c") as c:
        clinic = {m["id"]: m for m in c.get("/v1/models").json()["data"]}
    assert set(clinic) == {"smollm2-135m", "smollm2-135m-ondemand", DIGITS, "digits-torch"}
    assert [s["name"] for s in clinic[DIGITS]["verbund"]["sites"]] == ["rz-west"]


def test_inference_goes_on_when_an_oip_backend_is_killed(
    demo: Demo, holdout: tuple[list[list[float]], list[int]]
) -> None:
    images, labels = holdout
    with oip(demo) as c:
        first = c.post(f"/v2/models/{DIGITS}/infer", json=infer_body(images[:1]))
        assert first.status_code == 200, first.text
        served_by = first.headers["x-verbund-site"]
        victim = demo.backend_pids()[DIGIT_BACKENDS[served_by]]
        os.kill(victim, signal.SIGKILL)
        survivor = next(site for site in DIGIT_BACKENDS if site != served_by)
        right = 0
        for i in range(1, 11):
            resp = c.post(f"/v2/models/{DIGITS}/infer", json=infer_body(images[i : i + 1]))
            assert resp.status_code == 200, resp.text
            assert resp.headers["x-verbund-site"] == survivor
            right += int(resp.json()["outputs"][0]["data"][0]) == labels[i]
        assert right >= 8
        # the catalogue shows the dead site's backend as unavailable once noticed
        site = next(
            s
            for s in {m["id"]: m for m in c.get("/v1/models").json()["data"]}[DIGITS]["verbund"][
                "sites"
            ]
            if s["name"] == served_by
        )
        assert site["available"] is False
    assert not pid_alive(victim)


def test_the_demo_serves_a_model_of_each_framework(demo: Demo) -> None:
    """`verbund up` runs the PyTorch, ONNX and Keras models and lists them with their sites."""
    log = demo.log.read_text() if demo.log is not None else ""
    with oip(demo) as c:

        def joined() -> bool:  # the demo does not wait for them (await_ready = false)
            listed = {m["id"]: m["verbund"] for m in c.get("/v1/models").json()["data"]}
            return all(listed[n]["available"] for n in FRAMEWORK_MODELS)

        poll(joined, "the framework models to join the demo", 240, every=0.5)
        models = {m["id"]: m["verbund"] for m in c.get("/v1/models").json()["data"]}
        for name, site in FRAMEWORK_MODELS.items():
            entry = models[name]
            assert [s["name"] for s in entry["sites"]] == [site] and entry["available"]
            assert entry["card"]["license"] == "CC-BY-4.0" and entry["card"]["inputs"]
            assert f"model {name}" in log
            layout = entry["card"]["inputs"][0]["shape"][1:]
            body = {
                "inputs": [
                    {
                        "name": "images",
                        "datatype": "FP32",
                        "shape": [1, *layout],
                        "data": [0.0] * 64,
                    }
                ]
            }
            resp = c.post(f"/v2/models/{name}/infer", json=body)
            assert resp.status_code == 200, resp.text
            assert resp.headers["x-verbund-site"] == site
            assert {o["name"] for o in resp.json()["outputs"]} == {"digit", "probabilities"}
