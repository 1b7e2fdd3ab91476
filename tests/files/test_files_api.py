"""The Files API with in-process fakes: shapes, tenant isolation and hostile uploads."""

from __future__ import annotations

from pathlib import Path

from tests.batch.helpers import chat_line, create_batch, jsonl, upload
from tests.conftest import Gateway, GatewayFactory, federation_dict
from verbund.config import parse_config


def files_dir(gw: Gateway) -> Path:
    return Path(gw.services.config.gateway.state_dir) / "files"


def all_paths(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


async def test_upload_list_get_download_delete(gw: Gateway) -> None:
    data = jsonl([chat_line("a"), chat_line("b")])
    r = await upload(gw, data, filename="my input.jsonl")
    assert r.status_code == 200, r.text
    f = r.json()
    assert f["object"] == "file" and f["id"].startswith("file-")
    assert f["bytes"] == len(data) and f["filename"] == "my input.jsonl"
    assert f["purpose"] == "batch" and f["status"] == "processed"
    assert isinstance(f["created_at"], int)

    listed = (await gw.client.get("/v1/files", headers=gw.auth())).json()
    assert listed["object"] == "list" and [x["id"] for x in listed["data"]] == [f["id"]]
    assert listed["first_id"] == listed["last_id"] == f["id"] and listed["has_more"] is False
    assert (await gw.client.get(f"/v1/files/{f['id']}", headers=gw.auth())).json() == f
    content = await gw.client.get(f"/v1/files/{f['id']}/content", headers=gw.auth())
    assert content.content == data

    deleted = await gw.client.delete(f"/v1/files/{f['id']}", headers=gw.auth())
    assert deleted.json() == {"id": f["id"], "object": "file", "deleted": True}
    assert (await gw.client.get(f"/v1/files/{f['id']}", headers=gw.auth())).status_code == 404
    assert [p.name for p in files_dir(gw).iterdir()] == []


async def test_list_pagination_and_purpose_filter(gw: Gateway) -> None:
    ids = []
    for i, purpose in enumerate(["batch", "user_data", "batch", "fine-tune"]):
        r = await upload(gw, b"{}\n", purpose=purpose, filename=f"f{i}.jsonl")
        ids.append(r.json()["id"])
    page = (await gw.client.get("/v1/files?limit=2", headers=gw.auth())).json()
    assert page["has_more"] is True and len(page["data"]) == 2
    rest = (
        await gw.client.get(f"/v1/files?limit=10&after={page['last_id']}", headers=gw.auth())
    ).json()
    assert rest["has_more"] is False
    seen = [x["id"] for x in page["data"] + rest["data"]]
    assert sorted(seen) == sorted(ids) and len(set(seen)) == 4
    batch_only = (await gw.client.get("/v1/files?purpose=batch", headers=gw.auth())).json()
    assert {x["id"] for x in batch_only["data"]} == {ids[0], ids[2]}
    asc = (await gw.client.get("/v1/files?order=asc", headers=gw.auth())).json()
    assert [x["id"] for x in asc["data"]] == seen[::-1]
    for bad in ("limit=0", "limit=x", "order=up"):
        assert (await gw.client.get(f"/v1/files?{bad}", headers=gw.auth())).status_code == 400


async def test_another_institutions_file_is_not_found_everywhere(gw: Gateway) -> None:
    f = (await upload(gw, jsonl([chat_line("a")]))).json()
    other = gw.auth("uni-b")
    for method, path in [
        ("GET", f"/v1/files/{f['id']}"),
        ("GET", f"/v1/files/{f['id']}/content"),
        ("DELETE", f"/v1/files/{f['id']}"),
    ]:
        r = await gw.client.request(method, path, headers=other)
        assert r.status_code == 404, (method, path)
        assert r.json()["error"]["type"] == "invalid_request_error"
    assert (await gw.client.get("/v1/files", headers=other)).json()["data"] == []
    r = await create_batch(gw, f["id"], institution="uni-b")
    assert r.status_code == 404
    after = await gw.client.get(f"/v1/files?after={f['id']}", headers=other)
    assert after.status_code == 404
    # still there for its owner
    assert (await gw.client.get(f"/v1/files/{f['id']}", headers=gw.auth())).status_code == 200


async def test_no_key_no_files(gw: Gateway) -> None:
    assert (await gw.client.get("/v1/files")).status_code == 401
    r = await gw.client.post(
        "/v1/files", files={"file": ("a.jsonl", b"x")}, data={"purpose": "batch"}
    )
    assert r.status_code == 401
    assert list(files_dir(gw).iterdir()) == []


async def test_path_like_filenames_stay_metadata(gw: Gateway, tmp_path: Path) -> None:
    before = all_paths(tmp_path)
    for name, kept in [
        ("../x", "x"),
        ("../../etc/passwd", "passwd"),
        ("a\\..\\b.jsonl", "b.jsonl"),
    ]:
        r = await upload(gw, b"data\n", purpose="user_data", filename=name)
        assert r.status_code == 200, r.text
        assert r.json()["filename"] == kept
    created = all_paths(tmp_path) - before
    assert created and all(p.startswith("files/f-") for p in created), created
    assert not (tmp_path.parent / "x").exists()


def _raw_multipart(filename: bytes, content: bytes, purpose: bytes = b"batch") -> tuple[bytes, str]:
    boundary = "vbboundary123"
    body = (
        b"--vbboundary123\r\n"
        b'Content-Disposition: form-data; name="purpose"\r\n\r\n' + purpose + b"\r\n"
        b"--vbboundary123\r\n"
        b'Content-Disposition: form-data; name="file"; filename="' + filename + b'"\r\n'
        b"Content-Type: application/octet-stream\r\n\r\n" + content + b"\r\n"
        b"--vbboundary123--\r\n"
    )
    return body, f"multipart/form-data; boundary={boundary}"


async def test_hostile_and_malformed_uploads(gw: Gateway) -> None:
    async def post(body: bytes, ctype: str) -> int:
        r = await gw.client.post(
            "/v1/files", content=body, headers={**gw.auth(), "content-type": ctype}
        )
        if r.status_code != 200:
            assert r.json()["error"]["message"]
        return r.status_code

    body, ctype = _raw_multipart(b"a\x00b.jsonl", b"{}\n")
    assert await post(body, ctype) == 400
    body, ctype = _raw_multipart(b"..", b"{}\n")
    assert await post(body, ctype) == 400
    body, ctype = _raw_multipart(b"ok.jsonl", b"{}\n", purpose=b"assistants")
    assert await post(body, ctype) == 400
    body, ctype = _raw_multipart(b"ok.jsonl", b"{}\n")
    assert await post(body[: len(body) // 2 + 40], ctype) == 400  # cut off
    assert await post(b"{}", "application/json") == 400
    assert await post(body, "multipart/form-data") == 400  # no boundary
    no_file = await gw.client.post("/v1/files", data={"purpose": "batch"}, headers=gw.auth())
    assert no_file.status_code == 400
    assert await post(body, ctype) == 200
    assert len(list(files_dir(gw).iterdir())) == 1  # only the good one


async def test_upload_over_the_limit_is_413_and_leaves_nothing(
    gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    cfg = parse_config(federation_dict(tmp_path, files={"max_upload_bytes": 4096}))
    async with gateway_factory(cfg) as gw:
        r = await upload(gw, b"x" * 5000)
        assert r.status_code == 413
        assert r.json()["error"]["code"] == "request_too_large"
        # a client that lies about the length is stopped while streaming
        body, ctype = _raw_multipart(b"big.jsonl", b"y" * 200_000)

        async def chunks() -> object:
            for i in range(0, len(body), 1000):
                yield body[i : i + 1000]

        r = await gw.client.post(
            "/v1/files", content=chunks(), headers={**gw.auth(), "content-type": ctype}
        )
        assert r.status_code == 413
        assert list(files_dir(gw).iterdir()) == []
        assert (await gw.client.get("/v1/files", headers=gw.auth())).json()["data"] == []
        assert (await upload(gw, b"z" * 4096)).status_code == 200
