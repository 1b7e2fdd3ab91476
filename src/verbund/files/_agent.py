"""A site agent's file store, as the access point reaches it: the same
:class:`~verbund.files.BlobStore` interface as the local folder, over the agent's
``/blobs`` routes (through :class:`~verbund.federation.AgentClient`).

Bytes pass through the access point in memory only, in both directions: an upload is
streamed to the agent as it arrives (one HTTP request, chunked), a download streamed
back. The agent writes a blob under a temporary name and renames it only once the whole
request body has arrived, so an upload is complete or absent there, even when the access
point or the agent dies half-way. Every write names the data class of what it holds; the
agent refuses a class above its ``max_data_class`` (403).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import orjson

from verbund.errors import ApiError, SiteAgentError
from verbund.federation import AgentClient
from verbund.files._blobs import write_blob
from verbund.policy import DATA_CLASS_HEADER

__all__ = ["AgentBlobStore"]

UPLOAD_TIMEOUT = 3600.0  # one upload's request: large files over slow links
_END = b""


class _AgentWriter:
    """Streams the blob to the agent while it is written here; commit waits for the
    agent's answer (written and renamed), abort cuts the request (the agent drops it)."""

    def __init__(self, client: AgentClient, key: str, data_class: str) -> None:
        self._client = client
        self._key = key
        self._class = data_class
        self._queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=8)
        self._task: asyncio.Task[Any] | None = None

    async def _body(self) -> AsyncIterator[bytes]:
        while True:
            chunk = await self._queue.get()
            if chunk is _END:
                return
            yield chunk

    async def _send(self) -> Any:
        headers = {DATA_CLASS_HEADER: self._class, "content-type": "application/octet-stream"}
        async with self._client.stream(
            "PUT",
            f"/blobs/{self._key}",
            content=self._body(),
            headers=headers,
            within=UPLOAD_TIMEOUT,
        ) as resp:
            return await resp.aread()

    def _started(self) -> asyncio.Task[Any]:
        if self._task is None:
            self._task = asyncio.create_task(self._send(), name=f"upload-{self._key}")
        return self._task

    async def write(self, data: bytes) -> None:
        if not data:
            return
        task = self._started()
        put = asyncio.ensure_future(self._queue.put(bytes(data)))
        done, _ = await asyncio.wait({put, task}, return_when=asyncio.FIRST_COMPLETED)
        if put not in done:  # the agent answered (refused) before taking the body
            put.cancel()
            task.result()
            raise SiteAgentError(f"The site agent of {self._client.site!r} ended the upload.")

    async def commit(self) -> None:
        task = self._started()
        put = asyncio.ensure_future(self._queue.put(_END))
        await asyncio.wait({put, task}, return_when=asyncio.FIRST_COMPLETED)
        await task  # raises the agent's refusal or its unavailability

    async def abort(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, ApiError):
                await self._task


class AgentBlobStore:
    def __init__(self, client: AgentClient) -> None:
        self.client = client

    @property
    def site(self) -> str:
        return self.client.site

    def writer(self, key: str, data_class: str = "") -> _AgentWriter:
        return _AgentWriter(self.client, key, data_class)

    async def put(self, key: str, data: bytes) -> None:
        await write_blob(self, key, data)

    async def append(self, key: str, data: bytes, data_class: str = "") -> int:
        headers = {DATA_CLASS_HEADER: data_class, "content-type": "application/octet-stream"}
        async with self.client.stream(
            "POST", f"/blobs/{key}/append", content=data, headers=headers
        ) as resp:
            answer = orjson.loads(await resp.aread())
        return int(answer["offset"])

    async def read(self, key: str) -> AsyncIterator[bytes]:
        async with self.client.stream("GET", f"/blobs/{key}") as resp:
            async for chunk in resp.aiter_bytes():
                yield chunk

    async def read_range(self, key: str, offset: int, length: int) -> bytes:
        if length <= 0:
            return b""
        wanted = {"range": f"bytes={offset}-{offset + length - 1}"}
        async with self.client.stream("GET", f"/blobs/{key}", headers=wanted) as resp:
            data = await resp.aread()
        if len(data) != length:
            raise SiteAgentError(f"blob {key} at {self.site} is shorter than expected")
        return data

    async def size(self, key: str) -> int:
        try:
            data = await self.client.get_json(f"/blobs/{key}/size")
        except ApiError as exc:
            if exc.status == 404:
                raise KeyError(key) from None
            raise
        return int(data["bytes"])

    async def delete(self, key: str) -> None:
        await self.client.request("DELETE", f"/blobs/{key}")

    async def keys(self, prefix: str) -> list[str]:
        data = await self.client.get_json("/blobs", params={"prefix": prefix})
        return [str(k) for k in data["keys"]]
