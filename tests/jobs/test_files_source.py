"""Training files come from the Files API (the lead's wiring of issue 9 to issue 4)."""

from __future__ import annotations

import pytest

from tests.conftest import Gateway
from verbund.errors import BadRequest, NotFound
from verbund.jobs import FileServiceSource


async def test_uploaded_fine_tune_file_is_a_training_file(gw: Gateway) -> None:
    up = await gw.client.post(
        "/v1/files",
        headers=gw.auth(),
        data={"purpose": "fine-tune"},
        files={"file": ("digits.csv", b"p0,label\n1,0\n", "text/csv")},
    )
    assert up.status_code == 200, up.text
    source = FileServiceSource(gw.services.files)
    tf = await source.open("uni-a", up.json()["id"])
    assert tf.path.read_bytes() == b"p0,label\n1,0\n" and tf.size == 13
    with pytest.raises(NotFound):
        await source.open("uni-b", up.json()["id"])  # another tenant's id
    batch_file = await gw.client.post(
        "/v1/files",
        headers=gw.auth(),
        data={"purpose": "batch"},
        files={"file": ("x.jsonl", b"{}\n", "application/jsonl")},
    )
    with pytest.raises(BadRequest):
        await source.open("uni-a", batch_file.json()["id"])
