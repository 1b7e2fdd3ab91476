"""Waiting for a backend that may have hung, or for a client that may have left."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from verbund.config import RoutingConfig
from verbund.errors import ClientClosed
from verbund.federation import Backend
from verbund.proxy._forward import ClientGone

__all__ = ["WATCH_STEP", "Hung", "Watch"]

T = TypeVar("T")
WATCH_STEP = 0.25  # how often a waiting request looks whether its backend has hung


class Hung(Exception):
    """A confirming probe marked the backend down while a request waited on it."""


class Watch:
    """Awaits upstream work (no byte has reached the client yet) within a budget.

    It gives up early when the backend turns out to be hung: requests in flight there
    and no bytes back (``Backend.stalled``) trigger a confirming liveness probe
    (``on_suspect``), and once that has marked the backend down the request goes
    elsewhere at once (:class:`Hung`).

    The work runs in the calling task; one timer looks every ``WATCH_STEP`` seconds and
    cancels the task on a verdict (a task and ``asyncio.wait`` per request cost more
    than everything else the proxy does).

    A request still waiting after the first look also watches its client
    (``client_gone``): if the client disconnects, the upstream call is cancelled
    (:class:`ClientClosed`), which closes the connection to the backend, and engines
    stop generating for requests whose connection closed. Quick answers never start
    that watcher.
    """

    def __init__(
        self, routing: RoutingConfig, on_suspect: Callable[[Backend, bool], None] | None
    ) -> None:
        self._stall = routing.stall_seconds
        self.on_suspect = on_suspect

    async def __call__(
        self,
        backend: Backend,
        work: Awaitable[T],
        budget: float,
        client_gone: ClientGone | None = None,
    ) -> T:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        deadline = loop.time() + budget
        verdict: type[Exception] | None = None
        handle: asyncio.TimerHandle
        watcher: asyncio.Task[None] | None = None

        def gone(t: asyncio.Task[None]) -> None:
            nonlocal verdict
            if t.cancelled() or t.exception() is not None or verdict is not None:
                return
            verdict = ClientClosed
            task.cancel()

        def look() -> None:
            nonlocal handle, verdict, watcher
            if verdict is not None:
                return
            now = loop.time()
            if now >= deadline:
                verdict = TimeoutError
            elif not backend.healthy:
                verdict = Hung
            if verdict is not None:
                task.cancel()
                return
            if self.on_suspect is not None and backend.stalled(time.monotonic(), self._stall):
                self.on_suspect(backend, False)
            if client_gone is not None and watcher is None:
                watcher = loop.create_task(client_gone())
                watcher.add_done_callback(gone)
            handle = loop.call_at(min(now + WATCH_STEP, deadline), look)

        handle = loop.call_at(min(loop.time() + WATCH_STEP, deadline), look)
        try:
            result = await work
        except asyncio.CancelledError:
            # our own cancel becomes the verdict; anyone else's stays a cancellation
            if verdict is not None and task.uncancel() == 0:
                if verdict is ClientClosed:
                    raise ClientClosed("The client closed the connection.") from None
                raise verdict from None
            raise
        finally:
            handle.cancel()
            if watcher is not None:
                watcher.cancel()
        if verdict is not None:
            task.uncancel()  # the work swallowed our cancel and finished anyway
        return result
