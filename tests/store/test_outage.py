"""A store that goes away: routes that need it answer 503 ``store_unavailable`` with
``Retry-After`` (never 500), and come back when the store does."""

from __future__ import annotations

import shutil
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.batch.helpers import chat_line, create_batch, jsonl, upload
from tests.conftest import Gateway
from verbund.errors import StoreUnavailable
from verbund.files import FileService, LocalBlobStore
from verbund.store import Store, store_unavailable


@asynccontextmanager
async def sqlite_away(gw: Gateway) -> Any:
    """The SQLite file disappears (a directory takes its place) and the pool is emptied,
    so every new connection fails as on a lost volume; afterwards it comes back."""
    url = gw.services.store.url
    db = Path(url.split("///", 1)[1])
    aside = db.parent / "aside"
    aside.mkdir()
    await gw.services.store.engine.dispose()
    moved = [p for p in db.parent.glob(db.name + "*") if p.is_file()]
    for p in moved:
        p.rename(aside / p.name)
    db.mkdir()
    try:
        yield
    finally:
        await gw.services.store.engine.dispose()
        db.rmdir()
        for p in moved:
            (aside / p.name).rename(p)
        shutil.rmtree(aside)


def assert_store_unavailable(r: httpx.Response, what: str) -> None:
    assert r.status_code == 503, (what, r.status_code, r.text)
    err = r.json()["error"]
    assert err["code"] == "store_unavailable" and err["type"] == "server_error", what
    assert "store" in err["message"], what
    assert int(r.headers["retry-after"]) > 0, what


def file_blobs(gw: Gateway) -> list[str]:
    root = Path(gw.services.config.gateway.state_dir) / "files"
    return sorted(p.name for p in root.iterdir() if not p.name.startswith(".tmp-"))


async def test_routes_that_need_the_store_answer_503_while_it_is_away(gw: Gateway) -> None:
    f = (await upload(gw, jsonl([chat_line("a")]))).json()
    before = file_blobs(gw)
    admin = gw.admin()
    async with sqlite_away(gw):
        calls: list[tuple[str, httpx.Response]] = [
            ("batch creation", await create_batch(gw, f["id"])),
            ("upload", await upload(gw, jsonl([chat_line("b")]))),
            ("file listing", await gw.client.get("/v1/files", headers=gw.auth())),
            ("file lookup", await gw.client.get(f"/v1/files/{f['id']}", headers=gw.auth())),
            (
                "key creation",
                await gw.client.post("/admin/keys", json={"institution": "uni-a"}, headers=admin),
            ),
            (
                "institution change",
                await gw.client.patch(
                    "/admin/institutions/uni-a", json={"name": "Uni A"}, headers=admin
                ),
            ),
            ("site drain", await gw.client.post("/admin/sites/west/drain", headers=admin)),
            ("usage report", await gw.client.get("/admin/usage", headers=admin)),
            ("batch listing", await gw.client.get("/v1/batches", headers=gw.auth())),
        ]
        for what, r in calls:
            assert_store_unavailable(r, what)
        # the upload during the outage left no blob behind
        assert file_blobs(gw) == before
    # and everything works again once the store is back
    assert (await create_batch(gw, f["id"])).status_code == 200
    assert (await gw.client.get("/v1/files", headers=gw.auth())).status_code == 200
    assert (await upload(gw, jsonl([chat_line("c")]))).status_code == 200


async def test_upload_when_the_database_server_refuses_leaves_no_blob(tmp_path: Path) -> None:
    """asyncpg's refused connection arrives as a bare ConnectionRefusedError."""
    store = Store("postgresql+asyncpg://verbund@127.0.0.1:1/verbund")
    blobs = LocalBlobStore(tmp_path / "files")
    files = FileService(store, blobs, 1 << 20)
    try:
        with pytest.raises(StoreUnavailable):
            await files.create("uni-a", "batch", "a.jsonl", b"{}\n")
        upload_ = files.begin_upload()
        await upload_.write(b"{}\n")
        with pytest.raises(StoreUnavailable):
            await upload_.finish("uni-a", "batch", "b.jsonl")
        assert await blobs.keys("") == []
    finally:
        await store.aclose()


async def test_sweep_removes_blobs_without_rows_after_two_sweeps(tmp_path: Path) -> None:
    store = Store(f"sqlite+aiosqlite:///{tmp_path / 'v.db'}")
    await store.migrate()
    blobs = LocalBlobStore(tmp_path / "files")
    files = FileService(store, blobs, 1 << 20)
    try:
        kept = await files.create("uni-a", "batch", "a.jsonl", b"{}\n")
        await blobs.put("f-leftover", b"x")  # a blob whose row was never written
        await blobs.put("part-b1-0", b"y")  # not a file blob: batch parts are not swept
        assert await files.sweep() == []  # first seen: only suspected
        assert await files.sweep() == ["f-leftover"]
        assert await blobs.keys("") == sorted([kept.blob_key, "part-b1-0"])
    finally:
        await store.aclose()


@pytest.mark.parametrize(
    ("exc", "away"),
    [
        (ConnectionRefusedError(111, "refused"), True),
        (TimeoutError(), True),
        (ValueError("bug"), False),
    ],
)
def test_which_errors_mean_the_store_is_away(exc: BaseException, away: bool) -> None:
    assert (store_unavailable(exc) is not None) is away


def test_sqlalchemy_errors_by_kind() -> None:
    from sqlalchemy import exc as sa

    orig = Exception("x")
    assert store_unavailable(sa.OperationalError("SELECT 1", {}, orig)) is not None
    assert store_unavailable(sa.InterfaceError("SELECT 1", {}, orig)) is not None
    assert store_unavailable(sa.IntegrityError("INSERT", {}, orig)) is None
    assert store_unavailable(sa.ProgrammingError("SELECT", {}, orig)) is None
