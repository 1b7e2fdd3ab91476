"""Both request clients against a real socket: answers, streams and every kind of failure.

The server is a raw asyncio server on 127.0.0.1, so the test controls the bytes: a chunked
stream cut off in the middle, a server that never answers, a closed port.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from harness.ports import free_port
from verbund.federation import (
    UpstreamBroken,
    UpstreamRefused,
    UpstreamTimedOut,
)
from verbund.federation._upstream import AiohttpUpstream, HttpxUpstream, Upstream

BODY = b'{"id":"x","usage":{"prompt_tokens":3,"completion_tokens":2}}'
seen: list[dict[str, str]] = []


def _head(status: str, extra: str = "") -> bytes:
    return f"HTTP/1.1 {status}\r\n{extra}".encode()


async def _event(writer: asyncio.StreamWriter, data: bytes, *, first: bool) -> None:
    """One chunk of a chunked event stream, after the response head if it is the first."""
    if first:
        writer.write(
            _head("200 OK", "content-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
        )
    writer.write(b"%x\r\n%s\r\n" % (len(data), data))
    await writer.drain()


async def _handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode().split("\r\n")
            path = lines[0].split()[1]
            headers = {
                k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)
            }
            peer = str(writer.get_extra_info("peername"))
            seen.append({"path": path, "peer": peer, "method": lines[0].split()[0], **headers})
            await reader.readexactly(int(headers.get("content-length", "0")))
            if path.endswith("/ok"):
                writer.write(
                    _head(
                        "200 OK",
                        f"content-type: application/json\r\ncontent-length: {len(BODY)}\r\n\r\n",
                    )
                    + BODY
                )
            elif path.endswith("/busy"):
                writer.write(
                    _head("429 Too Many Requests", "retry-after: 7\r\ncontent-length: 2\r\n\r\n{}")
                )
            elif path.endswith("/stream"):
                for i in range(3):
                    await _event(writer, f"data: {i}\n\n".encode(), first=i == 0)
                    await asyncio.sleep(0.01)
                writer.write(b"0\r\n\r\n")
            elif path.endswith("/cut"):
                await _event(writer, b"data: 0\n\n", first=True)
                await asyncio.sleep(0.05)
                writer.transport.abort()  # a crash mid-stream: no final chunk
                return
            elif path.endswith("/silent"):
                await asyncio.sleep(30)
            elif path.endswith("/stall"):
                await _event(writer, b"data: 0\n\n", first=True)
                await asyncio.sleep(30)
            elif path.endswith("/garbage"):
                writer.write(b"NOT HTTP AT ALL\r\n\r\n")
                await writer.drain()
                writer.close()
                return
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


@pytest.fixture
async def server() -> AsyncIterator[str]:
    seen.clear()
    srv = await asyncio.start_server(_handle, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/prefix"
    finally:
        srv.close()


def _aiohttp(url: str) -> Upstream:
    return AiohttpUpstream(
        url, {"authorization": "Bearer sk-backend"}, limit=4, connect_timeout=1.0
    )


def _httpx(url: str) -> Upstream:
    client = httpx.AsyncClient(
        base_url=url, headers={"authorization": "Bearer sk-backend"}, trust_env=False
    )
    return HttpxUpstream(client, connect_timeout=1.0)


CLIENTS = pytest.mark.parametrize("make", [_aiohttp, _httpx], ids=["aiohttp", "httpx"])
Make = Callable[[str], Upstream]


async def _post(up: Upstream, path: str, read_timeout: float = 5.0) -> Any:
    return await up.post(
        path, b'{"a":1}', {"content-type": "application/json"}, read_timeout=read_timeout
    )


@CLIENTS
async def test_answer_headers_and_keep_alive(server: str, make: Make) -> None:
    up = make(server)
    try:
        for _ in range(3):
            resp = await _post(up, "/v1/ok")
            assert resp.status == 200
            assert await resp.read() == BODY
            assert resp.headers["Content-Type"] == "application/json"  # any case
            await resp.aclose()
    finally:
        await up.aclose()
    assert [s["path"] for s in seen] == ["/prefix/v1/ok"] * 3  # the URL's path is kept
    assert len({s["peer"] for s in seen}) == 1  # one kept-alive connection
    assert seen[0]["authorization"] == "Bearer sk-backend"
    assert seen[0]["content-type"] == "application/json"


async def test_aiohttp_asks_for_identity(server: str) -> None:
    up = _aiohttp(server)
    try:
        for _ in range(5):
            resp = await _post(up, "/v1/ok")
            await resp.read()
            await resp.aclose()
    finally:
        await up.aclose()
    assert seen[0]["accept-encoding"] == "identity"  # relayed bytes must not be compressed
    assert "user-agent" not in seen[0]
    assert len(seen) == 5


@CLIENTS
async def test_get_for_model_metadata(server: str, make: Make) -> None:
    up = make(server)
    try:
        resp = await up.get("/v2/models/digits/ok", {"x-request-id": "r1"}, read_timeout=5.0)
        assert resp.status == 200 and await resp.read() == BODY
        await resp.aclose()
        with pytest.raises(UpstreamTimedOut):
            resp = await up.get("/v2/models/digits/silent", {}, read_timeout=0.2)
            await resp.read()
    finally:
        await up.aclose()
    assert seen[0]["method"] == "GET" and seen[0]["path"] == "/prefix/v2/models/digits/ok"
    assert seen[0]["x-request-id"] == "r1" and seen[0]["authorization"] == "Bearer sk-backend"


@CLIENTS
async def test_status_and_headers_of_a_refusal(server: str, make: Make) -> None:
    up = make(server)
    try:
        resp = await _post(up, "/v1/busy")
        assert resp.status == 429
        assert resp.headers["retry-after"] == "7"
        assert await resp.read() == b"{}"
        await resp.aclose()
    finally:
        await up.aclose()


@CLIENTS
async def test_stream_arrives_in_pieces(server: str, make: Make) -> None:
    up = make(server)
    try:
        resp = await _post(up, "/v1/stream")
        got = b"".join([c async for c in resp.chunks()])
        await resp.aclose()
    finally:
        await up.aclose()
    assert got == b"data: 0\n\ndata: 1\n\ndata: 2\n\n"


@CLIENTS
async def test_stream_cut_off_is_broken(server: str, make: Make) -> None:
    up = make(server)
    try:
        resp = await _post(up, "/v1/cut")
        got: list[bytes] = []
        with pytest.raises(UpstreamBroken):
            async for c in resp.chunks():
                got.append(c)
        await resp.aclose()
    finally:
        await up.aclose()
    assert b"".join(got) == b"data: 0\n\n"


@CLIENTS
async def test_stream_that_stops_times_out(server: str, make: Make) -> None:
    up = make(server)
    try:
        resp = await _post(up, "/v1/stall", read_timeout=0.3)
        with pytest.raises(UpstreamTimedOut):
            async for _ in resp.chunks():
                pass
        await resp.aclose()
    finally:
        await up.aclose()


@CLIENTS
async def test_no_answer_times_out(server: str, make: Make) -> None:
    up = make(server)
    try:
        with pytest.raises(UpstreamTimedOut):
            await _post(up, "/v1/silent", read_timeout=0.3)
    finally:
        await up.aclose()


@CLIENTS
async def test_closed_port_is_refused(make: Make) -> None:
    up = make(f"http://127.0.0.1:{free_port()}")
    try:
        with pytest.raises(UpstreamRefused):
            await _post(up, "/v1/ok")
    finally:
        await up.aclose()


@CLIENTS
async def test_not_http_is_broken(server: str, make: Make) -> None:
    up = make(server)
    try:
        with pytest.raises(UpstreamBroken):
            resp = await _post(up, "/v1/garbage")
            await resp.read()
    finally:
        await up.aclose()


async def test_aiohttp_pool_is_bounded(server: str) -> None:
    """At most ``limit`` connections: the fifth request waits until one of four is let go."""
    up = _aiohttp(server)
    try:
        held = [await _post(up, "/v1/stall") for _ in range(4)]  # streams that never end
        waiting = asyncio.ensure_future(_post(up, "/v1/ok"))
        await asyncio.sleep(0.2)
        assert not waiting.done()
        await held[0].aclose()  # not read to the end: closed, and its slot is free
        resp = await asyncio.wait_for(waiting, 2)
        assert await resp.read() == BODY
        await resp.aclose()
        for r in held[1:]:
            await r.aclose()
    finally:
        await up.aclose()
