"""The Batch API with in-process fakes: execution, validation, isolation, cancel, expiry."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sqlalchemy import select, update

from tests.batch.helpers import (
    chat_line,
    create_batch,
    jsonl,
    output_lines,
    start_batch,
    upload,
)
from tests.conftest import MODEL, Gateway, GatewayFactory, federation_dict
from tests.fakes import FakeBackend
from verbund.config import parse_config
from verbund.store import BatchItemRow, BatchRow, UsageRow


async def run(gw: Gateway, within: float = 20.0) -> None:
    await gw.services.batch_runner.run_until_idle(within)


async def get(gw: Gateway, batch_id: str, institution: str = "uni-a") -> dict[str, Any]:
    r = await gw.client.get(f"/v1/batches/{batch_id}", headers=gw.auth(institution))
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    return out


def batch_config(tmp_path: Path, **batch: Any) -> Any:
    return parse_config(federation_dict(tmp_path, batch={"retry_backoff_seconds": 0, **batch}))


async def test_a_batch_runs_to_completion(gw: Gateway) -> None:
    ids = [f"req-{i}" for i in range(25)]
    batch = await start_batch(gw, [chat_line(i) for i in ids], metadata={"course": "ml-101"})
    assert batch["object"] == "batch" and batch["status"] == "in_progress"
    assert batch["request_counts"] == {"total": 25, "completed": 0, "failed": 0}
    assert batch["model"] == MODEL and batch["metadata"] == {"course": "ml-101"}
    assert batch["expires_at"] - batch["created_at"] == 24 * 3600
    await run(gw)
    done = await get(gw, batch["id"])
    assert done["status"] == "completed", done
    assert done["request_counts"] == {"total": 25, "completed": 25, "failed": 0}
    assert done["completed_at"] and done["finalizing_at"] and done["error_file_id"] is None
    assert done["usage"]["input_tokens"] == 25 * 7 and done["usage"]["output_tokens"] == 25 * 4
    lines = await output_lines(gw, done["output_file_id"])
    assert sorted(x["custom_id"] for x in lines) == sorted(ids)
    for x in lines:
        assert x["id"].startswith("batch_req_") and x["error"] is None
        assert x["response"]["status_code"] == 200 and x["response"]["request_id"]
        assert x["response"]["body"]["choices"][0]["message"]["content"]
    out_file = (
        await gw.client.get(f"/v1/files/{done['output_file_id']}", headers=gw.auth())
    ).json()
    assert out_file["purpose"] == "batch_output"
    # every request went upstream once, with the body of its line
    calls = [c for f in gw.fakes.values() for c in f.calls]
    assert sorted(c["body"]["messages"][0]["content"] for c in calls) == sorted(
        f"Hallo {i}" for i in ids
    )
    assert all(c["path"] == "/v1/chat/completions" for c in calls)
    # usage: one record for creating the batch, one per item, flagged as batch
    await gw.services.accounting.spool.flush()
    async with gw.services.store.session() as s:
        rows = (await s.execute(select(UsageRow))).scalars().all()
    created = [r for r in rows if r.endpoint == "/v1/batches"]
    items = [r for r in rows if r.endpoint == "/v1/chat/completions"]
    assert len(created) == 1 and created[0].status == "ok" and len(rows) == 26
    assert len(items) == 25 and {r.priority for r in items} == {"batch"}
    assert {r.institution_id for r in rows} == {"uni-a"}
    # no items and no result parts are left behind
    async with gw.services.store.session() as s:
        assert (await s.execute(select(BatchItemRow))).first() is None
    assert not await gw.services.files.blobs.keys("part-")


async def test_list_batches_and_pagination(gw: Gateway) -> None:
    made = [(await start_batch(gw, [chat_line("x")]))["id"] for _ in range(3)]
    page = (await gw.client.get("/v1/batches?limit=2", headers=gw.auth())).json()
    assert page["object"] == "list" and page["has_more"] is True
    rest = (await gw.client.get(f"/v1/batches?after={page['last_id']}", headers=gw.auth())).json()
    assert rest["has_more"] is False
    assert sorted(b["id"] for b in page["data"] + rest["data"]) == sorted(made)
    assert (await gw.client.get("/v1/batches?limit=101", headers=gw.auth())).status_code == 400


async def test_another_institutions_batch_is_not_found_everywhere(gw: Gateway) -> None:
    batch = await start_batch(gw, [chat_line("a")])
    other = gw.auth("uni-b")
    for method, path in [
        ("GET", f"/v1/batches/{batch['id']}"),
        ("POST", f"/v1/batches/{batch['id']}/cancel"),
        ("GET", f"/v1/batches?after={batch['id']}"),
    ]:
        r = await gw.client.request(method, path, headers=other)
        assert r.status_code == 404, (method, path)
    assert (await gw.client.get("/v1/batches", headers=other)).json()["data"] == []
    await run(gw)
    done = await get(gw, batch["id"])
    for fid in (done["output_file_id"], done["input_file_id"]):
        r = await gw.client.get(f"/v1/files/{fid}/content", headers=other)
        assert r.status_code == 404
    assert (await gw.client.get("/v1/batches/batch_nope", headers=gw.auth())).status_code == 404
    assert (await gw.client.get("/v1/batches/../x", headers=gw.auth())).status_code == 404


async def test_invalid_lines_give_a_failed_batch_and_nothing_runs(gw: Gateway) -> None:
    good = json.dumps(chat_line("ok")).encode()
    content = b"\n".join(
        [
            good,
            b"{not json",
            json.dumps(chat_line("ok")).encode(),  # duplicate custom_id
            json.dumps(chat_line("u", url="/v1/embeddings")).encode(),
            json.dumps(chat_line("m", method="GET")).encode(),
            json.dumps(chat_line("g", model="gpt-4o")).encode(),
            json.dumps(
                chat_line("s", body={"model": MODEL, "messages": [], "stream": True})
            ).encode(),
            json.dumps(chat_line("e", body={"model": MODEL})).encode(),
            b"[1, 2]",
            json.dumps({"method": "POST", "url": "/v1/chat/completions", "body": {}}).encode(),
            b"",
        ]
    )
    f = (await upload(gw, content)).json()
    r = await create_batch(gw, f["id"])
    assert r.status_code == 200, r.text
    batch = r.json()
    assert batch["status"] == "failed" and batch["failed_at"]
    errors = {e["line"]: e for e in batch["errors"]["data"]}
    assert errors[2]["code"] == "invalid_json_line"
    assert errors[3]["code"] == "duplicate_custom_id"
    assert errors[4]["code"] == "invalid_url"
    assert errors[5]["code"] == "invalid_method"
    assert errors[6]["code"] == "model_not_found"
    assert errors[7]["param"] == "body.stream"
    assert (
        errors[8]["code"] == "missing_required_parameter" and errors[8]["param"] == "body.messages"
    )
    assert errors[9]["code"] == "invalid_json_line"
    assert errors[10]["code"] == "invalid_custom_id"
    assert 1 not in errors and len(errors) == 9
    assert all(e["message"] for e in errors.values())
    await run(gw)
    assert gw.upstream_calls() == 0
    assert (await get(gw, batch["id"]))["status"] == "failed"
    async with gw.services.store.session() as s:
        assert (await s.execute(select(BatchItemRow))).first() is None


async def test_a_line_of_several_megabytes_is_a_line_error(
    gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    cfg = parse_config(federation_dict(tmp_path, files={"max_upload_bytes": 16 * 1024 * 1024}))
    async with gateway_factory(cfg) as gw:
        huge = chat_line("big")
        huge["body"]["messages"][0]["content"] = "x" * (5 * 1024 * 1024)
        f = (await upload(gw, jsonl([chat_line("a"), huge, chat_line("b")]))).json()
        batch = (await create_batch(gw, f["id"])).json()
        assert batch["status"] == "failed"
        assert [(e["line"], e["code"]) for e in batch["errors"]["data"]] == [(2, "line_too_long")]
        assert gw.upstream_calls() == 0


async def test_mixed_models_and_wrong_model_kind(gw: Gateway) -> None:
    f = (await upload(gw, jsonl([chat_line("a"), chat_line("b", model="emb")]))).json()
    batch = (await create_batch(gw, f["id"])).json()
    assert batch["status"] == "failed"
    assert batch["errors"]["data"][0]["code"] in ("mismatched_model", "invalid_model")


async def test_create_rejects_bad_parameters(gw: Gateway) -> None:
    f = (await upload(gw, jsonl([chat_line("a")]))).json()
    cases: list[dict[str, Any]] = [
        {"input_file_id": f["id"], "endpoint": "/v1/images", "completion_window": "24h"},
        {"input_file_id": f["id"], "endpoint": "/v1/chat/completions", "completion_window": "1h"},
        {"endpoint": "/v1/chat/completions", "completion_window": "24h"},
        {
            "input_file_id": f["id"],
            "endpoint": "/v1/chat/completions",
            "completion_window": "24h",
            "metadata": {"k": 1},
        },
    ]
    for body in cases:
        r = await gw.client.post("/v1/batches", json=body, headers=gw.auth())
        assert r.status_code == 400, body
        assert r.json()["error"]["param"]
    r = await gw.client.post("/v1/batches", content=b"{oops", headers=gw.auth())
    assert r.status_code == 400
    other = (await upload(gw, jsonl([chat_line("a")]), purpose="user_data")).json()
    r = await create_batch(gw, other["id"])
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_file_purpose"
    empty = (await upload(gw, b"\n\n")).json()
    r = await create_batch(gw, empty["id"])
    assert r.json()["status"] == "failed"
    assert r.json()["errors"]["data"][0]["code"] == "empty_file"
    assert gw.upstream_calls() == 0


async def test_policy_excluded_model_is_a_line_error(
    gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    data = federation_dict(tmp_path)
    data["institutions"][1]["allowed_regions"] = ["HH"]  # uni-b: no site qualifies
    async with gateway_factory(parse_config(data)) as gw:
        f = (await upload(gw, jsonl([chat_line("a")]), institution="uni-b")).json()
        batch = (await create_batch(gw, f["id"], institution="uni-b")).json()
        assert batch["status"] == "failed"
        assert batch["errors"]["data"][0]["code"] == "policy_violation"


async def test_upstream_errors_are_retried_then_reported(
    gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    cfg = batch_config(tmp_path, max_attempts=2)
    fakes = {n: FakeBackend(n, mode="status", status=503) for n in ("west-1", "sued-1", "ost-1")}
    async with gateway_factory(cfg, fakes) as gw:
        batch = await start_batch(gw, [chat_line("a"), chat_line("b")])
        await run(gw)
        done = await get(gw, batch["id"])
        assert done["status"] == "completed"
        assert done["request_counts"] == {"total": 2, "completed": 0, "failed": 2}
        assert done["output_file_id"] is None
        lines = await output_lines(gw, done["error_file_id"])
        assert sorted(x["custom_id"] for x in lines) == ["a", "b"]
        for x in lines:
            assert x["response"]["status_code"] in (502, 503)
            assert x["response"]["body"]["error"]["message"]
            assert "10.0.0.5" not in json.dumps(x)  # backend details stay inside
        # two attempts per item, each tried on up to three backends; backends that failed
        # three times in a row are ejected (at most half of them), so later tries skip them
        assert 2 * 2 <= gw.upstream_calls() <= 2 * 2 * 3


async def test_a_rejected_request_is_not_retried(
    gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    fakes = {
        n: FakeBackend(n, mode="status", status=400, error_body=b'{"error": {"message": "bad"}}')
        for n in ("west-1", "sued-1", "ost-1")
    }
    async with gateway_factory(batch_config(tmp_path), fakes) as gw:
        batch = await start_batch(gw, [chat_line("a")])
        await run(gw)
        done = await get(gw, batch["id"])
        (line,) = await output_lines(gw, done["error_file_id"])
        assert line["custom_id"] == "a" and line["response"]["status_code"] == 400
        assert gw.upstream_calls() == 1


async def test_cancel_stops_new_items_and_reports_them(gw: Gateway) -> None:
    batch = await start_batch(gw, [chat_line(f"c{i}") for i in range(5)])
    r = await gw.client.post(f"/v1/batches/{batch['id']}/cancel", headers=gw.auth())
    assert r.status_code == 200 and r.json()["status"] == "cancelling"
    assert r.json()["cancelling_at"]
    await run(gw)
    done = await get(gw, batch["id"])
    assert done["status"] == "cancelled" and done["cancelled_at"]
    assert done["request_counts"] == {"total": 5, "completed": 0, "failed": 5}
    lines = await output_lines(gw, done["error_file_id"])
    assert sorted(x["custom_id"] for x in lines) == [f"c{i}" for i in range(5)]
    assert {x["error"]["code"] for x in lines} == {"batch_cancelled"}
    assert gw.upstream_calls() == 0
    again = await gw.client.post(f"/v1/batches/{batch['id']}/cancel", headers=gw.auth())
    assert again.status_code == 200 and again.json()["status"] == "cancelled"
    finished = await start_batch(gw, [chat_line("z")])
    await run(gw)
    r = await gw.client.post(f"/v1/batches/{finished['id']}/cancel", headers=gw.auth())
    assert r.status_code == 409


async def test_expiry_after_the_completion_window(gw: Gateway) -> None:
    batch = await start_batch(gw, [chat_line(f"e{i}") for i in range(3)])
    async with gw.services.store.session() as s, s.begin():
        await s.execute(update(BatchRow).values(expires_at=0.0))
    await run(gw)
    done = await get(gw, batch["id"])
    assert done["status"] == "expired" and done["expired_at"]
    lines = await output_lines(gw, done["error_file_id"])
    assert sorted(x["custom_id"] for x in lines) == ["e0", "e1", "e2"]
    assert {x["error"]["code"] for x in lines} == {"batch_expired"}


async def test_the_input_of_a_running_batch_cannot_be_deleted(gw: Gateway) -> None:
    batch = await start_batch(gw, [chat_line("a")])
    r = await gw.client.delete(f"/v1/files/{batch['input_file_id']}", headers=gw.auth())
    assert r.status_code == 409
    await run(gw)
    r = await gw.client.delete(f"/v1/files/{batch['input_file_id']}", headers=gw.auth())
    assert r.status_code == 200


async def test_embeddings_batch(gw: Gateway) -> None:
    lines = [
        {
            "custom_id": f"v{i}",
            "method": "POST",
            "url": "/v1/embeddings",
            "body": {"model": "emb", "input": f"text {i}"},
        }
        for i in range(4)
    ]
    batch = await start_batch(gw, lines, endpoint="/v1/embeddings")
    await run(gw)
    done = await get(gw, batch["id"])
    out = await output_lines(gw, done["output_file_id"])
    assert sorted(x["custom_id"] for x in out) == ["v0", "v1", "v2", "v3"]
    assert all(x["response"]["body"]["data"][0]["embedding"] for x in out)
