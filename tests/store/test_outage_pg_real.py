"""A real PostgreSQL that stops: the routes that need it answer 503 with Retry-After and
an upload leaves no blob; when it is back, they work again."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.services import Postgres
from tests.batch.helpers import chat_line, create_batch, jsonl, upload
from tests.conftest import GatewayFactory, make_config
from tests.store.test_outage import assert_store_unavailable, file_blobs

pytestmark = pytest.mark.real


async def test_postgres_stopped_answers_503_and_leaves_no_blob(
    gateway_factory: GatewayFactory, tmp_path: Path, pg: Postgres
) -> None:
    cfg = make_config(tmp_path, store={"url": pg.url})
    async with gateway_factory(cfg) as gw:
        f = (await upload(gw, jsonl([chat_line("a")]))).json()
        before = file_blobs(gw)
        pg.stop()
        try:
            admin = gw.admin()
            assert_store_unavailable(await create_batch(gw, f["id"]), "batch creation")
            assert_store_unavailable(await upload(gw, jsonl([chat_line("b")])), "upload")
            assert file_blobs(gw) == before
            r = await gw.client.get("/v1/files", headers=gw.auth())
            assert_store_unavailable(r, "file listing")
            r = await gw.client.post("/admin/keys", json={"institution": "uni-a"}, headers=admin)
            assert_store_unavailable(r, "key creation")
            assert_store_unavailable(
                await gw.client.get("/admin/usage", headers=admin), "usage report"
            )
        finally:
            pg.start()
        assert (await create_batch(gw, f["id"])).status_code == 200
