"""Batches and files whose data class is above the access point's: their bytes lie at a
compliant site's agent (in-process here), the Files and Batch APIs behave as ever."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.batch.helpers import chat_line, create_batch, jsonl, output_lines, upload
from tests.conftest import Gateway, GatewayFactory, federation_dict, with_agents
from verbund.config import parse_config

SENSITIVE = {"X-Verbund-Data-Class": "sensitive"}


@pytest.fixture
async def agw(gateway_factory: GatewayFactory, tmp_path: Path) -> Gateway:
    data = with_agents(federation_dict(tmp_path / "ap", batch={"retry_backoff_seconds": 0}))
    data["gateway"]["max_data_class"] = "internal"
    async with gateway_factory(parse_config(data)) as g:
        yield g


def blobs_in(folder: Path) -> dict[str, bytes]:
    if not folder.exists():
        return {}
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


async def test_a_sensitive_batch_keeps_its_input_and_output_at_the_site(
    agw: Gateway, tmp_path: Path
) -> None:
    lines = [chat_line(f"patient-{i}") for i in range(6)]
    r = await agw.client.post(
        "/v1/files",
        files={"file": ("input.jsonl", jsonl(lines), "application/jsonl")},
        data={"purpose": "batch"},
        headers={**agw.auth(), **SENSITIVE},
    )
    assert r.status_code == 200, r.text
    file_id = r.json()["id"]
    r = await create_batch(agw, file_id)
    assert r.status_code == 200, r.text
    await agw.services.batch_runner.run_until_idle(20)
    done = (await agw.client.get(f"/v1/batches/{r.json()['id']}", headers=agw.auth())).json()
    assert done["status"] == "completed", done
    out = await output_lines(agw, done["output_file_id"])
    assert sorted(x["custom_id"] for x in out) == sorted(f"patient-{i}" for i in range(6))
    # only the sensitive site's backend was asked (its data class binds the batch)
    assert {name for name, f in agw.fakes.items() if f.calls} == {"west-1"}
    # the bytes lie at west's agent; the access point's file store holds none of them
    here = blobs_in(tmp_path / "ap" / "files")
    at_west = blobs_in(tmp_path / "ap" / "site-west" / "files")
    assert here == {}
    assert any(b"Hallo patient-3" in data for data in at_west.values())  # the input
    assert any(b"batch_req_" in data for data in at_west.values())  # the output
    assert not any(k.startswith("part-") for k in at_west)  # result parts cleaned up
    assert blobs_in(tmp_path / "ap" / "site-sued" / "files") == {}


async def test_the_files_api_is_the_same_for_files_at_a_site(agw: Gateway, tmp_path: Path) -> None:
    r = await agw.client.post(
        "/v1/files",
        files={"file": ("notes.jsonl", b'{"a": 1}\n', "application/jsonl")},
        data={"purpose": "user_data"},
        headers={**agw.auth(), **SENSITIVE},
    )
    assert r.status_code == 200, r.text
    f = r.json()
    assert f["bytes"] == 9 and f["filename"] == "notes.jsonl" and f["purpose"] == "user_data"
    listed = (await agw.client.get("/v1/files", headers=agw.auth())).json()["data"]
    assert [x["id"] for x in listed] == [f["id"]]
    got = await agw.client.get(f"/v1/files/{f['id']}/content", headers=agw.auth())
    assert got.status_code == 200 and got.content == b'{"a": 1}\n'
    other = await agw.client.get(f"/v1/files/{f['id']}/content", headers=agw.auth("uni-b"))
    assert other.status_code == 404
    assert len(blobs_in(tmp_path / "ap" / "site-west" / "files")) == 1
    gone = await agw.client.delete(f"/v1/files/{f['id']}", headers=agw.auth())
    assert gone.status_code == 200
    assert blobs_in(tmp_path / "ap" / "site-west" / "files") == {}
    # internal data stays with the access point, as before
    r = await upload(agw, b'{"b": 2}\n', purpose="user_data")
    assert r.status_code == 200
    assert len(blobs_in(tmp_path / "ap" / "files")) == 1


async def test_a_batch_prefers_the_site_holding_its_input(
    gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    data = with_agents(federation_dict(tmp_path / "ap", batch={"retry_backoff_seconds": 0}))
    data["gateway"]["max_data_class"] = "internal"  # confidential files lie at an agent
    # the file goes to the home site (west); routing alone would prefer sued (in BY)
    data["institutions"][0]["home_region"] = "BY"
    for site in data["sites"]:  # room for the whole batch at one backend
        site["backends"][0]["max_concurrency"] = 32
    async with gateway_factory(parse_config(data)) as gw:
        lines = [chat_line(f"item-{i}") for i in range(8)]
        r = await gw.client.post(
            "/v1/files",
            files={"file": ("input.jsonl", jsonl(lines), "application/jsonl")},
            data={"purpose": "batch"},
            headers={**gw.auth(), "X-Verbund-Data-Class": "confidential"},
        )
        assert r.status_code == 200, r.text
        assert blobs_in(tmp_path / "ap" / "site-west" / "files")  # stored at west
        r = await create_batch(gw, r.json()["id"])
        assert r.status_code == 200, r.text
        await gw.services.batch_runner.run_until_idle(20)
        done = (await gw.client.get(f"/v1/batches/{r.json()['id']}", headers=gw.auth())).json()
        assert done["status"] == "completed", done
        # sued may take confidential data too; the batch stays with its data at west
        assert len(gw.fakes["west-1"].calls) == 8 and gw.fakes["sued-1"].calls == []
