"""Batches of Open Inference Protocol requests: endpoint ``/v2/models/{name}/infer``, each
line checked like an interactive inference, run at spare capacity, results per custom_id."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import select

from tests.batch.helpers import create_batch, jsonl, output_lines, start_batch, upload
from tests.conftest import GatewayFactory
from tests.gateway.test_oip_routes import DIGITS, fakes_for, oip_calls
from tests.gateway.test_oip_tensors import digits_config
from verbund.batch import oip_model
from verbund.store import UsageRow

ENDPOINT = f"/v2/models/{DIGITS}/infer"


def line(custom_id: str, n: int = 1, url: str = ENDPOINT, **tensor: Any) -> dict[str, Any]:
    images = {"name": "images", "datatype": "FP32", "shape": [n, 1, 8, 8], "data": [1.0] * 64 * n}
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": url,
        "body": {"inputs": [{**images, **tensor}]},
    }


def test_oip_endpoints_name_their_model() -> None:
    assert oip_model(ENDPOINT) == DIGITS
    assert oip_model(f"/v2/models/{DIGITS}/versions/v1/infer") == DIGITS
    for other in ("/v1/chat/completions", f"/v2/models/{DIGITS}", "/v2/models//infer"):
        assert oip_model(other) is None
    assert oip_model(f"/v2/models/{'m' * 60}/infer") is None  # longer than the store keeps


async def test_an_oip_batch_runs_with_results_per_custom_id(
    gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    cfg = digits_config(tmp_path)
    async with gateway_factory(cfg, fakes_for(cfg)) as g:
        ids = [f"img-{i}" for i in range(40)]
        batch = await start_batch(g, [line(i) for i in ids], endpoint=ENDPOINT)
        assert batch["endpoint"] == ENDPOINT and batch["model"] == DIGITS
        await g.services.batch_runner.run_until_idle(20.0)
        done = (await g.client.get(f"/v1/batches/{batch['id']}", headers=g.auth())).json()
        assert done["status"] == "completed", done
        assert done["request_counts"] == {"total": 40, "completed": 40, "failed": 0}
        out = await output_lines(g, done["output_file_id"])
        assert sorted(x["custom_id"] for x in out) == sorted(ids)
        # the fake answers each input's sum: 64 pixels of 1.0
        assert all(x["response"]["body"]["outputs"][0]["data"] == [64.0] for x in out)
        assert {c["path"] for c in oip_calls(g)} == {ENDPOINT}
        await g.services.accounting.spool.flush()
        async with g.services.store.session() as s:
            rows = list((await s.execute(select(UsageRow))).scalars())
        infer = [r for r in rows if r.endpoint == "/v2/infer"]
        assert len(infer) == 40 and all(r.priority == "batch" for r in infer)
        assert all((r.request_bytes or 0) > 64 and (r.response_bytes or 0) > 0 for r in infer)


async def test_oip_lines_are_checked_against_the_model(
    gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    cfg = digits_config(tmp_path)
    async with gateway_factory(cfg, fakes_for(cfg)) as g:
        lines = [
            line("ok"),
            line("shape", shape=[1, 64]),
            line("type", datatype="FP64"),
            line("big", n=17),
            line("url", url="/v2/models/other/infer"),
        ]
        up = await upload(g, jsonl(lines))
        resp = await create_batch(g, up.json()["id"], endpoint=ENDPOINT)
        assert resp.status_code == 200, resp.text
        failed = resp.json()
        assert failed["status"] == "failed"
        errors = {e["line"]: e for e in failed["errors"]["data"]}
        assert errors[2]["param"] == "body.inputs[0].shape" and "'images'" in errors[2]["message"]
        assert errors[3]["param"] == "body.inputs[0].datatype"
        assert errors[4]["code"] == "tensor_too_large"
        assert errors[5]["code"] == "invalid_url"
        assert oip_calls(g) == []
        chat_model = await create_batch(g, up.json()["id"], endpoint="/v2/models/smol/infer")
        assert chat_model.status_code == 200
        assert chat_model.json()["errors"]["data"][0]["code"] == "invalid_url"
        bad = await create_batch(g, up.json()["id"], endpoint="/v2/models/x/ready")
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "endpoint"
