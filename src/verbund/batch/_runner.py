"""The batch runner: a background task of an access point that executes batch items.

It wires five loops, each over one part (all owned by :meth:`BatchRunner.run`):

- housekeeping (:mod:`._housekeeping`): keeps the list of running batches fresh
  (expiry, cancellation, batches ready to finalize);
- feeding (:mod:`._feeder`): starts items where a backend has spare capacity
  (:mod:`._capacity`), each as a task that sends its request like interactive traffic;
- committing (:mod:`._committer`): records the items' outcomes, many at a time;
- heartbeat: renews the leases of everything this runner holds;
- loop lag: measures how late the event loop runs (:meth:`Capacity.watch_loop`).

A runner that dies loses nothing: its leases run out and any runner takes the items over.
On SQLite the runner's own writes take turns (:mod:`._writes`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable

from sqlalchemy import func, select

from verbund.batch._capacity import Capacity
from verbund.batch._committer import Committer
from verbund.batch._execute import Dispatch
from verbund.batch._feeder import Feeder
from verbund.batch._finalize import Finalizer
from verbund.batch._housekeeping import UNDER_WAY, Housekeeping
from verbund.batch._items import ItemStore
from verbund.batch._limiter import AdaptiveLimiter
from verbund.batch._objects import ItemStatus
from verbund.batch._places import BatchPlaces
from verbund.batch._writes import STORE_ERRORS, SerialWrites
from verbund.config import BatchConfig
from verbund.files import FileService
from verbund.store import BatchRow, Store

__all__ = ["BatchRunner", "Dispatch"]

log = logging.getLogger("verbund.batch")


IDLE_LOOKS = 10  # polls between looks at the store while no batch runs here


class BatchRunner:
    def __init__(
        self,
        *,
        store: Store,
        files: FileService,
        config: BatchConfig,
        dispatch: Dispatch,
        access_point: str,
        limiter: AdaptiveLimiter | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._cfg = config
        self._clock = clock
        self.token = uuid.uuid4().hex[:16]
        self.owner = f"{access_point[:40]}/{self.token}"
        self.capacity = Capacity(config, limiter)
        self._items = ItemStore(store)
        writes = SerialWrites(store)
        self._writes = writes
        self._wake = asyncio.Event()  # feed now: a slot or a lane appeared
        self._housekeeping_now = asyncio.Event()
        self._stopping = asyncio.Event()
        places = BatchPlaces(store, files)  # results lie where the batch's input lies
        self._finalizer = Finalizer(
            store, files, self.owner, config.lease_seconds, clock, places=places
        )
        self._housekeeping = Housekeeping(store, self._items, writes)
        self._feeder = Feeder(
            store=store,
            items=self._items,
            files=files,
            config=config,
            dispatch=dispatch,
            capacity=self.capacity,
            writes=writes,
            access_point=access_point,
            owner=self.owner,
            clock=clock,
            report=lambda outcome: self._committer.put(outcome),
            wake=self._wake,
        )
        self._committer = Committer(
            items=self._items,
            files=files,
            writes=writes,
            token=self.token,
            owner=self.owner,
            batch_idle=self._feeder.idle,
            nudge=self._housekeeping_now.set,
            places=places,
        )

    @property
    def limiter(self) -> AdaptiveLimiter:
        return self.capacity.limiter

    @property
    def dispatched(self) -> int:
        """Items started by this runner so far."""
        return self._feeder.dispatched

    def wake(self) -> None:
        """Something changed (a batch was created or cancelled): look now, not at the next poll."""
        self._housekeeping_now.set()
        self._wake.set()

    async def run(self) -> None:
        """Run until cancelled; then stop at safe points and give unfinished items back."""
        self._stopping.clear()
        await self._finalizer.sweep_parts()
        loops = [
            asyncio.create_task(self._housekeeping_loop(), name="batch-housekeeping"),
            asyncio.create_task(self._feed_loop(), name="batch-dispatch"),
            asyncio.create_task(self._committer.run(self._stopping), name="batch-commit"),
            asyncio.create_task(self._heartbeat_loop(), name="batch-heartbeat"),
            asyncio.create_task(self.capacity.watch_loop(self._stopping), name="batch-loop-lag"),
        ]
        try:
            done, _ = await asyncio.wait(loops, return_when=asyncio.FIRST_EXCEPTION)
            for t in done:
                t.result()  # a loop only ends by an error: let it out
        finally:
            # not cancelled mid-statement: loops end at their next safe point
            self._stopping.set()
            self._wake.set()
            self._committer.stop()
            tasks = list(self._feeder.tasks)
            for t in tasks:
                t.cancel()  # requests in flight; their items go back to the queue
            _, late = await asyncio.wait([*loops, *tasks], timeout=10.0)
            for t in late:
                t.cancel()
            await self._shutdown()

    async def active_batches(self) -> int:
        async with self._store.session() as s:
            n = await s.scalar(
                select(func.count()).select_from(BatchRow).where(BatchRow.status.in_(UNDER_WAY))
            )
            return int(n or 0)

    async def run_until_idle(self, within: float) -> None:
        """Run until no batch is active (tests and tools); raises TimeoutError after ``within``."""
        task = asyncio.create_task(self.run())
        deadline = time.monotonic() + within
        try:
            while await self.active_batches():
                if task.done():
                    task.result()
                if time.monotonic() > deadline:
                    raise TimeoutError("batches still active")
                await asyncio.sleep(0.02)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # -- loops ------------------------------------------------------------------------

    async def _housekeeping_loop(self) -> None:
        """Look at the store every other poll while batches run here; with none, ten times
        less often (a batch created at this access point wakes it at once; one created
        at another is picked up within ``IDLE_LOOKS`` polls): idle costs next to nothing."""
        while not self._stopping.is_set():
            self._housekeeping_now.clear()
            idle = False
            try:
                found = await self._housekeeping.look(self._clock())
                idle = not (found.running or found.stops or found.ready or self._feeder.lanes)
                await self._feeder.sync(found.running, found.stops)
                if self._feeder.lanes:
                    self._wake.set()
                for batch_id in found.ready:
                    await self._finalizer.finalize(batch_id)
            except STORE_ERRORS as exc:
                log.warning("batch runner: store unavailable (%s); retrying", type(exc).__name__)
            wait = (IDLE_LOOKS if idle else 2) * self._cfg.poll_interval
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._housekeeping_now.wait(), wait)

    async def _feed_loop(self) -> None:
        while not self._stopping.is_set():
            self._wake.clear()
            busy = self.capacity.loop_busy()
            try:
                if not busy:
                    await self._feeder.feed(self._clock())
            except STORE_ERRORS as exc:
                log.warning("batch runner: store unavailable (%s); retrying", type(exc).__name__)
                await asyncio.sleep(1.0)
            with contextlib.suppress(TimeoutError):
                wait = 0.02 if busy else self._cfg.poll_interval
                if not self._feeder.lanes:
                    wait = IDLE_LOOKS * self._cfg.poll_interval  # housekeeping wakes it
                await asyncio.wait_for(self._wake.wait(), wait)

    async def _heartbeat_loop(self) -> None:
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self._cfg.lease_seconds / 3)
                return
            try:
                async with self._writes.turn():
                    await self._items.renew(self.owner, self._cfg.lease_seconds)
            except STORE_ERRORS as exc:
                log.warning("batch leases not renewed (%s)", type(exc).__name__)

    async def _shutdown(self) -> None:
        """Record what has finished; give unfinished items back at once (no lease wait)."""
        outcomes = self._committer.drain()
        try:
            if outcomes:
                await self._committer.commit(outcomes)
            unstarted = self._feeder.take_unstarted()
            if unstarted:
                await self._items.release(self.owner, unstarted, ItemStatus.pending)
            await self._items.release(self.owner, None, ItemStatus.pending)
        except STORE_ERRORS as exc:
            log.warning("batch runner stopped without releasing leases (%s)", type(exc).__name__)
