"""Files expire (an institution's default and maximum, OpenAI's ``expires_after``) and
are purged from the store and the disk; erasure of a key removes its files and batches,
records itself in the audit log, and leaves a canary nowhere."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.batch.helpers import chat_line, jsonl, upload
from tests.conftest import MODEL, Gateway, GatewayFactory, federation_dict
from verbund.config import parse_config
from verbund.errors import BadRequest
from verbund.files import file_expiry
from verbund.store import FileRow

HOUR = 3600


def _config(state: Path, responses_key_env: str = "", **uni_a: Any) -> Any:
    data = federation_dict(state)
    data["institutions"][0].update(uni_a)
    if responses_key_env:
        data["responses"] = {"key_env": responses_key_env}
    return parse_config(data)


def test_expiry_follows_the_request_the_default_and_the_maximum() -> None:
    assert file_expiry(None, 0, 0, 100.0) is None
    assert file_expiry(None, HOUR, 0, 100.0) == 100.0 + HOUR
    assert file_expiry(2 * HOUR, HOUR, 0, 100.0) == 100.0 + 2 * HOUR
    assert file_expiry(None, 0, 5 * HOUR, 100.0) == 100.0 + 5 * HOUR
    with pytest.raises(BadRequest):
        file_expiry(6 * HOUR, 0, 5 * HOUR, 100.0)


def _on_disk(root: Path, needle: bytes) -> list[Path]:
    """Every file under ``root`` (blobs, the database, its write-ahead log) holding needle."""
    return [p for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


async def _upload_expiring(gw: Gateway, seconds: int | None) -> Any:
    data = {"purpose": "user_data"}
    if seconds is not None:
        data |= {"expires_after[anchor]": "created_at", "expires_after[seconds]": str(seconds)}
    return await gw.client.post(
        "/v1/files",
        files={"file": ("notes.txt", b"some notes", "text/plain")},
        data=data,
        headers=gw.auth(),
    )


async def test_expired_files_are_gone_from_store_and_disk(
    gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    cfg = _config(tmp_path, file_expires_after=2 * HOUR, file_max_expires_after=10 * HOUR)
    async with gateway_factory(cfg) as gw:
        by_default = (await _upload_expiring(gw, None)).json()
        asked = (await _upload_expiring(gw, 5 * HOUR)).json()
        assert by_default["expires_at"] - by_default["created_at"] in (2 * HOUR, 2 * HOUR + 1)
        assert asked["expires_at"] - asked["created_at"] in (5 * HOUR, 5 * HOUR + 1)
        too_long = await _upload_expiring(gw, 11 * HOUR)
        assert too_long.status_code == 400
        assert too_long.json()["error"]["param"] == "expires_after.seconds"
        files = gw.services.files
        paths = {}
        for f in (by_default, asked):
            obj = await files.get("uni-a", f["id"])
            paths[f["id"]] = files.local_path(obj)
            assert paths[f["id"]] is not None and paths[f["id"]].exists()
        # the retention task's round, three hours from now: the first file is past its time
        retention = gw.services.accounting.retention
        retention._clock = lambda: time.time() + 3 * HOUR
        deleted = await retention.purge()
        assert deleted["files"] == 1
        assert (
            await gw.client.get(f"/v1/files/{by_default['id']}", headers=gw.auth())
        ).status_code == 404
        assert not paths[by_default["id"]].exists()
        assert (
            await gw.client.get(f"/v1/files/{asked['id']}", headers=gw.auth())
        ).status_code == 200
        assert paths[asked["id"]].exists()
        entries = await gw.services.audit.entries()
        purge = [e for e in entries if e.action == "retention.purge"]
        assert purge and '"files":1' in purge[-1].after


async def test_erasure_of_a_key_removes_its_data_and_is_audited(
    gateway_factory: GatewayFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    canary = b"CANARY-7f3a9e-erase-me"
    monkeypatch.setenv("VERBUND_TEST_RESPONSES_KEY", "the test's sealed responses")
    cfg = _config(tmp_path, "VERBUND_TEST_RESPONSES_KEY", store_responses=True)
    async with gateway_factory(cfg) as gw:
        admin = gw.admin()
        r = await gw.client.post(
            "/admin/keys", json={"institution": "uni-a", "name": "p"}, headers=admin
        )
        doomed = r.json()
        doomed_auth = {"authorization": f"Bearer {doomed['key']}"}
        line = chat_line("c1")
        line["body"]["messages"][0]["content"] = canary.decode()
        f = await gw.client.post(
            "/v1/files",
            files={"file": ("input.jsonl", jsonl([line]), "application/jsonl")},
            data={"purpose": "batch"},
            headers=doomed_auth,
        )
        assert f.status_code == 200, f.text
        other = await gw.client.post(
            "/v1/files",
            files={"file": ("keep.txt", b"KEEP-ME", "text/plain")},
            data={"purpose": "user_data"},
            headers=doomed_auth,
        )
        batch = await gw.client.post(
            "/v1/batches",
            json={
                "input_file_id": f.json()["id"],
                "endpoint": "/v1/chat/completions",
                "completion_window": "24h",
            },
            headers=doomed_auth,
        )
        assert batch.status_code == 200, batch.text
        stored = await gw.client.post(
            "/v1/responses",
            json={"model": MODEL, "input": canary.decode(), "store": True},
            headers=doomed_auth,
        )
        assert stored.status_code == 200 and stored.json()["store"] is True, stored.text
        kept = (await upload(gw, b"ANOTHER-KEY-DATA", purpose="user_data")).json()  # another key
        assert _on_disk(tmp_path, canary)  # the test can see the canary where it lies

        r = await gw.client.post("/admin/erasure", json={"key_id": doomed["id"]}, headers=admin)
        assert r.status_code == 200, r.text
        report = r.json()
        assert (report["files"], report["batches"], report["responses"]) == (2, 1, 1)
        got = await gw.client.get(f"/v1/responses/{stored.json()['id']}", headers=doomed_auth)
        assert got.status_code == 404
        for fid in (f.json()["id"], other.json()["id"]):
            got = await gw.client.get(f"/v1/files/{fid}", headers=doomed_auth)
            assert got.status_code == 404
        got = await gw.client.get(f"/v1/batches/{batch.json()['id']}", headers=doomed_auth)
        assert got.status_code == 404
        assert (
            await gw.client.get(f"/v1/files/{kept['id']}", headers=gw.auth())
        ).status_code == 200
        entry = [e for e in await gw.services.audit.entries() if e.action == "data.erase"][-1]
        assert entry.target == f"key:{doomed['id']}" and entry.actor == "admin"
        assert (await gw.services.audit.verify()).ok
        assert _on_disk(tmp_path, canary) == []
        assert _on_disk(tmp_path, b"KEEP-ME") == []


async def test_erasure_needs_one_subject_and_the_institution_s_right(gw: Gateway) -> None:
    admin = gw.admin()
    both = await gw.client.post(
        "/admin/erasure", json={"key_id": "a", "person_id": "b"}, headers=admin
    )
    assert both.status_code == 400
    missing = await gw.client.post("/admin/erasure", json={"key_id": "key-nope"}, headers=admin)
    assert missing.status_code == 404
    member = await gw.client.post("/admin/erasure", json={"key_id": "x"}, headers=gw.auth())
    assert member.status_code in (401, 403)


async def test_erasure_of_a_person_covers_every_key_of_theirs(
    gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    async with gateway_factory(_config(tmp_path)) as gw:
        keys = gw.services.keys
        mine = [
            await keys.create("uni-a", f"own{i}", actor="test", person_id="p-erin")
            for i in range(2)
        ]
        ids = []
        for k in mine:
            r = await gw.client.post(
                "/v1/files",
                files={"file": ("x.txt", b"PERSONAL", "text/plain")},
                data={"purpose": "user_data"},
                headers={"authorization": f"Bearer {k.key}"},
            )
            ids.append(r.json()["id"])
        kept = (await upload(gw, b"OTHER", purpose="user_data")).json()["id"]
        r = await gw.client.post("/admin/erasure", json={"person_id": "p-erin"}, headers=gw.admin())
        assert r.status_code == 200, r.text
        assert sorted(r.json()["keys"]) == sorted(k.id for k in mine)
        assert r.json()["files"] == 2
        for fid in ids:
            assert await gw.services.store.owned(FileRow, fid, "uni-a") is None
        assert await gw.services.store.owned(FileRow, kept, "uni-a") is not None
        entry = [e for e in await gw.services.audit.entries() if e.action == "data.erase"][-1]
        assert entry.target == "person:p-erin"
