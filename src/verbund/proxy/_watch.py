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

__all__ = ["WATCH_STEP", "Hung", "StallWatch", "Stalled", "Watch", "stream_stall_bound"]

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


class Stalled(Exception):
    """A started stream's backend sent no chunk within its stall bound."""


def stream_stall_bound(backend: Backend, routing: RoutingConfig) -> float:
    """How long a started stream may wait for its next chunk from ``backend``.

    ``stream_stall_factor`` times the backend's observed time per token, at least
    ``stream_stall_floor`` (engines pause between tokens when they admit a long prompt
    into the batch) and at most ``read_timeout``.
    """
    tpot = backend.latency.tpot or 0.0
    bound = max(routing.stream_stall_floor, routing.stream_stall_factor * tpot)
    return min(bound, routing.read_timeout)


class StallWatch:
    """Bounds each of a stream's repeated waits to ``bound`` seconds (:class:`Stalled`).

    Two waits repeat for every chunk of a stream: for the backend's next chunk, and for
    the client to take the last one. A backend that stops part-way (SIGSTOP, a partition,
    a wedged accelerator) keeps its connection open and sends nothing, and a client that
    stops reading keeps its connection open and takes nothing; socket timeouts are
    minutes. The relay watches the first, the streaming response the second, each with
    its own watch, so a slow client never counts against the backend.

    One lazy timer per stream, not one per chunk (a timer per chunk would cost more than
    relaying it): the timer fires about once per ``bound`` and re-arms itself from the
    moment the current wait began, so a wait costs two assignments.
    """

    __slots__ = ("_bound", "_fired", "_handle", "_loop", "_since", "_task", "_waiting")

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._task: asyncio.Task[object] | None = None
        self._bound = 0.0
        self._since = 0.0
        self._waiting = False
        self._fired = False
        self._handle: asyncio.TimerHandle | None = None

    def arm(self, bound: float) -> None:
        """The bound for the chunks to come (one per backend the stream is read from)."""
        self._bound = bound

    async def wait(self, work: Awaitable[T]) -> T:
        """``work``'s result; :class:`Stalled` if it takes longer than the bound."""
        if self._task is None:
            self._task = asyncio.current_task()
        self._since = self._loop.time()
        self._waiting = True
        if self._handle is None:
            self._handle = self._loop.call_at(self._since + self._bound, self._look)
        try:
            return await work
        except asyncio.CancelledError:
            task = self._task
            if self._fired and task is not None and task.uncancel() == 0:
                self._fired = False
                raise Stalled from None
            raise
        finally:
            self._waiting = False

    def _look(self) -> None:
        self._handle = None
        if not self._waiting or self._task is None:
            return  # the next wait arms a new timer
        due = self._since + self._bound
        if self._loop.time() >= due:
            self._fired = True
            self._task.cancel()
            return
        self._handle = self._loop.call_at(due, self._look)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
