"""File bytes sealed at rest (AES-GCM): the same answers as the plain store, nothing
readable on disk, and any change to the sealed bytes refused."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

from tests.conftest import GatewayFactory
from verbund.errors import StoreError
from verbund.files import LocalBlobStore, SealedBlobStore
from verbund.files._sealed import CHUNK

KEY = bytes(range(32))


async def _all(store: SealedBlobStore | LocalBlobStore, key: str) -> bytes:
    return b"".join([c async for c in store.read(key)])


@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 17])
async def test_sealed_store_reads_what_the_plain_store_reads(tmp_path: Path, size: int) -> None:
    plain, sealed = (
        LocalBlobStore(tmp_path / "p"),
        SealedBlobStore(LocalBlobStore(tmp_path / "s"), KEY),
    )
    data = os.urandom(size)
    for s in (plain, sealed):
        await s.put("f-a", data)
    assert await _all(sealed, "f-a") == data and await sealed.size("f-a") == size
    for off, n in ((0, size), (size // 3, size // 2), (max(size - 5, 0), min(5, size))):
        assert await sealed.read_range("f-a", off, n) == data[off : off + n]
    if size >= 16:  # a short run of random bytes may occur in any ciphertext by chance
        assert data[:16] not in (tmp_path / "s" / "f-a").read_bytes()


async def test_appends_reseal_the_last_chunk_and_return_plain_offsets(tmp_path: Path) -> None:
    sealed = SealedBlobStore(LocalBlobStore(tmp_path), KEY)
    parts = [os.urandom(n) for n in (10, CHUNK, 5, CHUNK - 15, 3)]
    offsets = [await sealed.append("f-out", p) for p in parts]
    whole = b"".join(parts)
    assert offsets == [sum(len(p) for p in parts[:i]) for i in range(len(parts))]
    assert await _all(sealed, "f-out") == whole
    assert await sealed.read_range("f-out", offsets[3], len(parts[3])) == parts[3]


async def test_changed_or_moved_chunks_and_another_key_are_refused(tmp_path: Path) -> None:
    inner = LocalBlobStore(tmp_path)
    sealed = SealedBlobStore(inner, KEY)
    await sealed.put("f-a", os.urandom(2 * CHUNK))
    path = inner.local_path("f-a")
    raw = bytearray(path.read_bytes())
    raw[100] ^= 1
    path.write_bytes(bytes(raw))
    with pytest.raises(StoreError):
        await _all(sealed, "f-a")
    raw[100] ^= 1
    half = len(raw) // 2
    path.write_bytes(bytes(raw[half:] + raw[:half]))  # the two chunks swapped
    with pytest.raises(StoreError):
        await sealed.read_range("f-a", 0, 10)
    path.write_bytes(bytes(raw))
    with pytest.raises(StoreError):
        await SealedBlobStore(inner, bytes(32)).read_range("f-a", 0, 10)
    (tmp_path / "f-b").write_bytes(bytes(raw))  # another blob's name: its chunks do not fit
    with pytest.raises(StoreError):
        await sealed.read_range("f-b", 0, 10)


async def test_uploads_are_sealed_on_disk_and_read_back_in_clear(
    gateway_factory: GatewayFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VERBUND_FILE_KEY", base64.b64encode(KEY).decode())
    canary = b"CANARY-sealed-4c1d" * 100
    async with gateway_factory() as gw:
        r = await gw.client.post(
            "/v1/files",
            files={"file": ("n.txt", canary, "text/plain")},
            data={"purpose": "user_data"},
            headers=gw.auth(),
        )
        assert r.status_code == 200, r.text
        got = await gw.client.get(f"/v1/files/{r.json()['id']}/content", headers=gw.auth())
        assert got.content == canary
    on_disk = [p for p in tmp_path.rglob("*") if p.is_file() and b"CANARY-sealed" in p.read_bytes()]
    assert on_disk == []
