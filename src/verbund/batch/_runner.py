"""The batch runner: a background task of an access point that executes batch items.

Loops (all owned by :meth:`BatchRunner.run`):

- housekeeping: keeps the list of running batches fresh (expiry, cancellation, batches
  ready to finalize).
- dispatcher: starts items where a backend has spare capacity. An item goes to a
  backend only while the backend's requests in flight stay below
  ``batch.utilisation_threshold`` of its ``max_concurrency``, and within the adaptive
  per-backend limit of :class:`AdaptiveLimiter`. Items are claimed from the store with a
  lease, a few more than can start at once, so a freed slot is refilled without waiting
  for the store.
- item tasks: read the request from the input file, send it through the router's plan
  and the proxy like interactive traffic (usage recorded with priority ``batch``).
- committer: appends result lines to this runner's result part of the batch (file store,
  fsynced) and then records them in the items' rows, many at a time.
- heartbeat: renews the leases of everything this runner holds.

A runner that dies loses nothing: its leases run out and any runner takes the items over.
On SQLite the runner's own writes are serialised by a lock (SQLite has one writer, and
its busy wait sleeps in steps of up to 100 ms).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import uuid
from collections.abc import AsyncIterator, Callable

from sqlalchemy import select, update
from sqlalchemy.exc import SQLAlchemyError

from verbund.batch._execute import Dispatch, Execution, Lane, execute
from verbund.batch._finalize import Finalizer, part_key
from verbund.batch._items import ClaimedItem, ItemStore, Outcome
from verbund.batch._limiter import AdaptiveLimiter, Signal
from verbund.batch._objects import BatchStatus, ItemStatus, response_line
from verbund.config import BatchConfig
from verbund.errors import ApiError, NoBackendAvailable, StoreError
from verbund.federation import Backend
from verbund.files import FileObject, FileService
from verbund.store import BatchRow, FileRow, Store

__all__ = ["BatchRunner", "Dispatch"]

log = logging.getLogger("verbund.batch")

_STORE_ERRORS = (SQLAlchemyError, StoreError, OSError)


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
        self._files = files
        self._cfg = config
        self._backends = dispatch
        self._ap = access_point
        self._clock = clock
        self.limiter = limiter or AdaptiveLimiter()
        self.token = uuid.uuid4().hex[:16]
        self.owner = f"{access_point[:40]}/{self.token}"
        self._items = ItemStore(store)
        self._finalizer = Finalizer(store, files, self.owner, config.lease_seconds, clock)
        self._wake = asyncio.Event()
        self._results: asyncio.Queue[Outcome | None] = asyncio.Queue()
        self._stopping = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._per_batch: dict[str, int] = {}
        self._starting: dict[str, int] = {}
        self._lanes: dict[str, Lane] = {}
        self._rr = 0
        self._housekeeping_now = asyncio.Event()
        self._serial = store.engine.dialect.name == "sqlite"
        self._write_lock = asyncio.Lock()
        self.dispatched = 0
        self.loop_lag = 0.0

    # -- public -----------------------------------------------------------------------

    def wake(self) -> None:
        """Something changed (a batch was created or cancelled): look now, not at the next poll."""
        self._housekeeping_now.set()
        self._wake.set()

    @contextlib.asynccontextmanager
    async def _writing(self) -> AsyncIterator[None]:
        if self._serial:
            async with self._write_lock:
                yield
        else:
            yield

    async def run(self) -> None:
        """Run until cancelled; then stop at safe points and give unfinished items back."""
        self._stopping.clear()
        await self._finalizer.sweep_parts()
        loops = [
            asyncio.create_task(self._housekeeping_loop(), name="batch-housekeeping"),
            asyncio.create_task(self._dispatch_loop(), name="batch-dispatch"),
            asyncio.create_task(self._commit_loop(), name="batch-commit"),
            asyncio.create_task(self._heartbeat_loop(), name="batch-heartbeat"),
            asyncio.create_task(self._lag_loop(), name="batch-loop-lag"),
        ]
        try:
            done, _ = await asyncio.wait(loops, return_when=asyncio.FIRST_EXCEPTION)
            for t in done:
                t.result()  # a loop only ends by an error: let it out
        finally:
            # not cancelled mid-statement: loops end at their next safe point
            self._stopping.set()
            self._wake.set()
            self._results.put_nowait(None)
            for t in self._tasks:
                t.cancel()  # requests in flight; their items go back to the queue
            _, late = await asyncio.wait([*loops, *self._tasks], timeout=10.0)
            for t in late:
                t.cancel()
            await self._shutdown()

    async def active_batches(self) -> int:
        async with self._store.session() as s:
            rows = await s.execute(
                select(BatchRow.id).where(
                    BatchRow.status.in_(
                        [BatchStatus.in_progress, BatchStatus.cancelling, BatchStatus.finalizing]
                    )
                )
            )
            return len(rows.all())

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

    # -- dispatcher -------------------------------------------------------------------

    async def _housekeeping_loop(self) -> None:
        while not self._stopping.is_set():
            self._housekeeping_now.clear()
            try:
                await self._housekeeping(self._clock())
            except _STORE_ERRORS as exc:
                log.warning("batch runner: store unavailable (%s); retrying", type(exc).__name__)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._housekeeping_now.wait(), 2 * self._cfg.poll_interval)

    async def _lag_loop(self) -> None:
        """Watch this process's event loop: the access point's own CPU is capacity too.

        Interactive requests share the event loop with batch work; while it runs late,
        starting more batch requests would make every interactive answer later.
        """
        tick = 0.02
        while not self._stopping.is_set():
            t = time.monotonic()
            await asyncio.sleep(tick)
            late = max(0.0, time.monotonic() - t - tick)
            self.loop_lag = max(late, self.loop_lag * 0.8)  # peak, fading in ~0.2 s

    def _loop_busy(self) -> bool:
        limit = self._cfg.max_loop_lag_ms / 1000
        return limit > 0 and self.loop_lag > limit

    async def _dispatch_loop(self) -> None:
        while not self._stopping.is_set():
            self._wake.clear()
            busy = self._loop_busy()
            try:
                if not busy:
                    await self._dispatch(self._clock())
            except _STORE_ERRORS as exc:
                log.warning("batch runner: store unavailable (%s); retrying", type(exc).__name__)
                await asyncio.sleep(1.0)
            with contextlib.suppress(TimeoutError):
                wait = 0.02 if busy else self._cfg.poll_interval
                await asyncio.wait_for(self._wake.wait(), wait)

    async def _housekeeping(self, now: float) -> None:
        active = [BatchStatus.in_progress, BatchStatus.cancelling, BatchStatus.finalizing]
        async with self._store.session() as s:
            rows = list(
                (await s.execute(select(BatchRow).where(BatchRow.status.in_(active)))).scalars()
            )
            counts = await self._items.counts(s, [r.id for r in rows])
        stops: dict[str, ItemStatus] = {}
        expiring = [
            r.id
            for r in rows
            if r.status == BatchStatus.in_progress
            and r.final_status is None
            and now >= r.expires_at
        ]
        for row in rows:
            if row.id in expiring:
                stops[row.id] = ItemStatus.expired
            elif row.final_status and row.status != BatchStatus.finalizing:
                stops[row.id] = (
                    ItemStatus.expired
                    if row.final_status == BatchStatus.expired
                    else ItemStatus.cancelled
                )
        if stops:
            async with self._writing(), self._store.session() as s, s.begin():
                for batch_id in expiring:
                    await s.execute(
                        update(BatchRow)
                        .where(BatchRow.id == batch_id, BatchRow.final_status.is_(None))
                        .values(final_status=BatchStatus.expired.value)
                    )
                    log.info("batch %s: completion window ended", batch_id)
                for batch_id, status in stops.items():
                    await self._items.stop_unstarted(s, batch_id, status, now)
        ready: list[str] = []
        running: set[str] = set()
        for row in rows:
            c = counts[row.id]
            unfinished = c.get(ItemStatus.pending, 0) + c.get(ItemStatus.running, 0)
            if row.status == BatchStatus.finalizing:
                if row.lease_until < now:
                    ready.append(row.id)
            elif row.id in stops or not unfinished:
                ready.append(row.id)
            elif row.status == BatchStatus.in_progress:
                running.add(row.id)
        for batch_id in [b for b in self._lanes if b not in running]:
            lane = self._lanes.pop(batch_id)
            if lane.buffer:  # claimed here but never started: they stop with the batch
                ids = [i.id for i in lane.buffer]
                lane.buffer.clear()
                async with self._writing():
                    await self._items.release(
                        self.owner, ids, stops.get(batch_id, ItemStatus.cancelled)
                    )
        for row in rows:
            if row.id in running:
                lane = self._lanes.get(row.id) or await self._lane(row)
                lane.has_work = True  # retries may have become due
                self._lanes[row.id] = lane
        if self._lanes:
            self._wake.set()
        for batch_id in ready:
            await self._finalizer.finalize(batch_id)

    async def _lane(self, row: BatchRow) -> Lane:
        async with self._store.session() as s:
            f = await s.get(FileRow, row.input_file_id)
        return Lane(
            batch_id=row.id,
            institution_id=row.institution_id,
            key_id=row.key_id,
            data_class=row.data_class,
            endpoint=row.endpoint,
            model=row.model,
            input=FileObject.from_row(f) if f else None,
        )

    def room(self, backend: Backend) -> int:
        """How many more batch items ``backend`` may take now."""
        cap = backend.config.max_concurrency
        by_limiter = self.limiter.available(backend.name, cap or None)
        if not cap:
            return by_limiter
        busy = backend.outstanding + self._starting.get(backend.name, 0)
        by_utilisation = math.floor(cap * self._cfg.utilisation_threshold + 1e-9) - busy
        return max(0, min(by_limiter, by_utilisation))

    async def _dispatch(self, now: float) -> None:
        lanes = list(self._lanes.values())
        if not lanes:
            return
        self._rr = (self._rr + 1) % len(lanes)
        for lane in lanes[self._rr :] + lanes[: self._rr]:
            if self._cfg.max_in_flight - len(self._tasks) <= 0:
                return
            if not lane.buffer and not lane.has_work:
                continue
            try:
                plan = self._backends.plan(lane.model, lane.institution_id, lane.data_class)
            except NoBackendAvailable:
                continue  # nothing can serve now; the batch waits
            except ApiError as exc:
                await self._fail_lane(lane, exc, now)
                continue
            for backend in plan:
                n = min(self.room(backend), self._cfg.max_in_flight - len(self._tasks))
                if n <= 0:
                    continue
                prefetch = self._cfg.prefetch
                if lane.has_work and len(lane.buffer) < n + prefetch // 2:
                    # claim ahead: the next free slots need no trip to the store
                    want = min(n + prefetch, self._cfg.max_in_flight) - len(lane.buffer)
                    async with self._writing():
                        claimed = await self._items.claim(
                            lane.batch_id, want, self.owner, now, self._cfg.lease_seconds
                        )
                    lane.buffer.extend(claimed)
                    if len(claimed) < want:
                        lane.has_work = False
                ordered = [backend, *(b for b in plan if b is not backend)]
                for _ in range(min(n, len(lane.buffer))):
                    self._start(lane, lane.buffer.popleft(), ordered)
                if not lane.buffer and not lane.has_work:
                    break

    async def _fail_lane(self, lane: Lane, exc: ApiError, now: float) -> None:
        """The batch's model is no longer allowed or known: its remaining items fail."""
        async with self._writing():
            claimed = await self._items.claim(
                lane.batch_id, 500, self.owner, now, self._cfg.lease_seconds
            )
        if not claimed:
            lane.has_work = False
        for item in [*lane.buffer, *claimed]:
            line = response_line(item.custom_id, exc.status, "", exc.body())
            self._results.put_nowait(Outcome(item, "failed", line))
        lane.buffer.clear()

    def _start(self, lane: Lane, item: ClaimedItem, plan: list[Backend]) -> None:
        name = plan[0].name
        self.limiter.acquire(name)
        self._starting[name] = self._starting.get(name, 0) + 1
        self._per_batch[lane.batch_id] = self._per_batch.get(lane.batch_id, 0) + 1
        self.dispatched += 1
        task = asyncio.create_task(self._run_item(lane, item, plan))
        self._tasks.add(task)

        def done(t: asyncio.Task[None]) -> None:
            self._tasks.discard(t)
            left = self._per_batch[lane.batch_id] = self._per_batch[lane.batch_id] - 1
            if left == 0:
                del self._per_batch[lane.batch_id]
            self._wake.set()

        task.add_done_callback(done)

    # -- items ------------------------------------------------------------------------

    async def _run_item(self, lane: Lane, item: ClaimedItem, plan: list[Backend]) -> None:
        name = plan[0].name
        started = False

        def on_send() -> None:
            nonlocal started
            self._starting[name] -= 1
            started = True

        result: Execution | None = None
        try:
            result = await execute(
                item,
                lane,
                plan,
                backends=self._backends,
                files=self._files,
                config=self._cfg,
                access_point=self._ap,
                clock=self._clock,
                on_send=on_send,
            )
            self._results.put_nowait(result.outcome)
        finally:
            if not started:
                self._starting[name] -= 1
            if result is None:
                self.limiter.release(name, Signal.neutral)
            else:
                self.limiter.release(name, result.signal, result.latency, result.work)

    # -- committer --------------------------------------------------------------------

    async def _commit_loop(self) -> None:
        while not self._stopping.is_set():
            first = await self._results.get()
            if first is None:
                return  # stopping: the rest is committed by _shutdown
            outcomes = [first]
            while not self._results.empty() and len(outcomes) < 500:
                nxt = self._results.get_nowait()
                if nxt is None:
                    self._results.put_nowait(None)
                    break
                outcomes.append(nxt)
            while True:
                try:
                    await self._commit(outcomes)
                    break
                except _STORE_ERRORS as exc:
                    log.warning("batch results not recorded yet (%s); retrying", type(exc).__name__)
                    if self._stopping.is_set():
                        for o in outcomes:  # _shutdown tries once more
                            self._results.put_nowait(o)
                        return
                    await asyncio.sleep(1.0)
            if any(self._maybe_done(o.item.batch_id) for o in outcomes):
                self._housekeeping_now.set()  # finalize it soon

    def _maybe_done(self, batch_id: str) -> bool:
        """Nothing of the batch runs or waits here any more."""
        if batch_id in self._per_batch:
            return False
        lane = self._lanes.get(batch_id)
        return lane is None or (not lane.buffer and not lane.has_work)

    async def _commit(self, outcomes: list[Outcome]) -> None:
        parts: dict[int, tuple[str, int, int]] = {}
        by_batch: dict[str, list[Outcome]] = {}
        for o in outcomes:
            if o.final:
                by_batch.setdefault(o.item.batch_id, []).append(o)
        for batch_id, group in by_batch.items():
            key = part_key(batch_id, self.token)
            offset = await self._files.blobs.append(key, b"".join(o.line for o in group))
            for o in group:
                parts[o.item.id] = (key, offset, len(o.line))
                offset += len(o.line)
        async with self._writing():
            applied = await self._items.record(outcomes, parts, self.owner)
        if applied != len(outcomes):
            log.info(
                "%d batch results were for items whose lease had passed on", len(outcomes) - applied
            )

    # -- leases -----------------------------------------------------------------------

    async def _heartbeat_loop(self) -> None:
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self._cfg.lease_seconds / 3)
                return
            try:
                async with self._writing():
                    await self._items.renew(self.owner, self._clock(), self._cfg.lease_seconds)
            except _STORE_ERRORS as exc:
                log.warning("batch leases not renewed (%s)", type(exc).__name__)

    async def _shutdown(self) -> None:
        """Record what has finished; give unfinished items back at once (no lease wait)."""
        outcomes: list[Outcome] = []
        while not self._results.empty():
            o = self._results.get_nowait()
            if o is not None:
                outcomes.append(o)
        try:
            if outcomes:
                await self._commit(outcomes)
            unstarted = [i.id for lane in self._lanes.values() for i in lane.buffer]
            for lane in self._lanes.values():
                lane.buffer.clear()
            if unstarted:
                await self._items.release(self.owner, unstarted, ItemStatus.pending)
            await self._items.release(self.owner, None, ItemStatus.pending)
        except _STORE_ERRORS as exc:
            log.warning("batch runner stopped without releasing leases (%s)", type(exc).__name__)
