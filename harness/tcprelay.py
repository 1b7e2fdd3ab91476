"""A tiny TCP relay for chaos tests: a wire tap, a fault switch and a WAN delay.

It sits between the access point and one engine and

- records when each connection was accepted and each HTTP request line seen (``seen``),
  so a test knows what the access point *sent* to a backend even when the backend
  itself is broken;
- in mode ``reset`` resets every open connection (TCP RST) and every new one, after
  noting the request it carried; ``blackhole`` accepts and never answers; ``pass``
  relays;
- delays every chunk by ``delay`` seconds each way (a WAN, where ``tc netem`` is missing).

In-process use: :class:`RelayThread`. As a process (inside a network namespace):
``python -m harness.tcprelay --listen 10.0.0.2:8000 --target 127.0.0.1:8001 --delay-ms 15``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import socket
import struct
import threading
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

Mode = Literal["pass", "reset", "blackhole"]
T = TypeVar("T")
_REQUEST_LINE = re.compile(rb"^(GET|POST|PUT|DELETE|HEAD|PATCH|OPTIONS) (\S+) HTTP/1\.[01]\r?\n")


@dataclass(frozen=True, slots=True)
class Seen:
    time: float  # wall clock, comparable with other processes' logs
    method: str
    path: str
    mode: Mode  # the relay's mode when it saw the request


@dataclass(eq=False)
class _Conn:
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


def _reset(writer: asyncio.StreamWriter | None) -> None:
    """Close with a TCP RST instead of a FIN."""
    if writer is None or writer.transport.is_closing():
        return
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class Relay:
    def __init__(
        self,
        target: tuple[str, int],
        listen: tuple[str, int] = ("127.0.0.1", 0),
        delay: float = 0.0,
    ) -> None:
        self.target = target
        self.listen = listen
        self.delay = delay
        self.mode: Mode = "pass"
        self.seen: list[Seen] = []
        self.accepted: list[float] = []
        self._conns: set[_Conn] = set()
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, *self.listen, backlog=1024)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for conn in list(self._conns):
            _reset(conn.client)
            _reset(conn.upstream)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    def set_mode(self, mode: Mode) -> None:
        self.mode = mode
        if mode != "pass":
            for conn in list(self._conns):
                _reset(conn.client)
                _reset(conn.upstream)

    def _tap(self, data: bytes) -> None:
        m = _REQUEST_LINE.match(data)
        if m:
            self.seen.append(Seen(time.time(), m.group(1).decode(), m.group(2).decode(), self.mode))

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted.append(time.time())
        conn = _Conn(writer)
        self._conns.add(conn)
        try:
            if self.mode != "pass":
                await self._refuse(reader, writer)
                return
            try:
                up_reader, up_writer = await asyncio.open_connection(*self.target)
            except OSError:
                _reset(writer)  # the engine is gone: the client sees its connection reset
                return
            conn.upstream = up_writer
            await asyncio.gather(
                self._pipe(reader, up_writer, tap=True), self._pipe(up_reader, writer, tap=False)
            )
        finally:
            self._conns.discard(conn)
            _reset(conn.upstream)
            if not writer.transport.is_closing():
                writer.close()

    async def _refuse(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        mode = self.mode
        with contextlib.suppress(TimeoutError, OSError):
            first = await asyncio.wait_for(reader.read(65536), 0.2 if mode == "reset" else None)
            self._tap(first)
            while mode == "blackhole" and first:
                first = await reader.read(65536)
        _reset(writer)

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, tap: bool) -> None:
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        loop = asyncio.get_running_loop()

        async def deliver() -> None:
            while True:
                at, data = await queue.get()
                if not data:
                    break
                wait = at - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                dst.write(data)
                await dst.drain()
            if dst.can_write_eof():
                dst.write_eof()

        sender = asyncio.create_task(deliver()) if self.delay else None
        try:
            while True:
                data = await src.read(65536)
                if tap and data:
                    self._tap(data)
                if sender is not None:
                    queue.put_nowait((loop.time() + self.delay, data))
                    if not data:
                        await sender
                        return
                    continue
                if not data:
                    if dst.can_write_eof():
                        dst.write_eof()
                    return
                dst.write(data)
                await dst.drain()
        except (OSError, RuntimeError):
            _reset(dst)
        finally:
            if sender is not None and not sender.done():
                sender.cancel()


class RelayThread:
    """A :class:`Relay` on its own event loop in a daemon thread, driven from sync tests."""

    def __init__(self, target: tuple[str, int], delay: float = 0.0) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self.relay = Relay(target, delay=delay)
        self._run(self.relay.start())

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    @property
    def port(self) -> int:
        return self.relay.port

    @property
    def seen(self) -> list[Seen]:
        return list(self.relay.seen)

    def set_mode(self, mode: Mode) -> None:
        async def switch() -> None:
            self.relay.set_mode(mode)

        self._run(switch())

    def stop(self) -> None:
        self._run(self.relay.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()


def _addr(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


async def _serve(listen: tuple[str, int], target: tuple[str, int], delay: float) -> None:
    relay = Relay(target, listen=listen, delay=delay)
    await relay.start()
    await asyncio.Event().wait()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--listen", required=True, help="HOST:PORT")
    p.add_argument("--target", required=True, help="HOST:PORT")
    p.add_argument("--delay-ms", type=float, default=0.0, help="one-way delay per chunk")
    args = p.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(_addr(args.listen), _addr(args.target), args.delay_ms / 1000))


if __name__ == "__main__":
    main()
