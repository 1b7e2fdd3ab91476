"""Handing the items of running batches to backends with room.

Each running batch has a :class:`Lane`. A feeding pass visits the lanes round robin
(so one big batch does not starve the others), asks the router for the batch's plan,
and starts as many items on each backend as :class:`Capacity` allows. Items are claimed
from the store with a lease, a few more than can start at once (``batch.prefetch``), so
a freed slot is refilled without waiting for the store. Each started item is a task
that sends the request like interactive traffic (:func:`execute`) and passes its
outcome on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from verbund.batch._capacity import Capacity
from verbund.batch._execute import Dispatch, Execution, Lane, execute
from verbund.batch._items import ClaimedItem, ItemStore, Outcome
from verbund.batch._objects import ItemStatus, response_line
from verbund.batch._writes import SerialWrites
from verbund.config import BatchConfig
from verbund.errors import ApiError, NoBackendAvailable
from verbund.federation import Backend
from verbund.files import FileObject, FileService
from verbund.store import BatchRow, FileRow, Store

__all__ = ["Feeder"]


class Feeder:
    def __init__(
        self,
        *,
        store: Store,
        items: ItemStore,
        files: FileService,
        config: BatchConfig,
        dispatch: Dispatch,
        capacity: Capacity,
        writes: SerialWrites,
        access_point: str,
        owner: str,
        clock: Callable[[], float],
        report: Callable[[Outcome], None],
        wake: asyncio.Event,
    ) -> None:
        """``report`` takes every item's outcome; ``wake`` is set when a slot frees up."""
        self._store = store
        self._items = items
        self._files = files
        self._cfg = config
        self._backends = dispatch
        self._capacity = capacity
        self._writes = writes
        self._ap = access_point
        self._owner = owner
        self._clock = clock
        self._report = report
        self._wake = wake
        self.lanes: dict[str, Lane] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self._per_batch: dict[str, int] = {}  # items in flight per batch
        self._rr = 0
        self.dispatched = 0

    def idle(self, batch_id: str) -> bool:
        """Nothing of the batch runs or waits here any more."""
        if batch_id in self._per_batch:
            return False
        lane = self.lanes.get(batch_id)
        return lane is None or (not lane.buffer and not lane.has_work)

    def take_unstarted(self) -> list[int]:
        """The ids of items claimed here but not started, which the lanes let go of."""
        ids = [i.id for lane in self.lanes.values() for i in lane.buffer]
        for lane in self.lanes.values():
            lane.buffer.clear()
        return ids

    async def sync(self, running: list[BatchRow], stops: dict[str, ItemStatus]) -> None:
        """Keep a lane for exactly the running batches; a dropped lane's claimed items
        end as their batch's ``stops`` says (cancelled if it says nothing)."""
        keep = {r.id for r in running}
        for batch_id in [b for b in self.lanes if b not in keep]:
            lane = self.lanes.pop(batch_id)
            if lane.buffer:  # claimed here but never started: they stop with the batch
                ids = [i.id for i in lane.buffer]
                lane.buffer.clear()
                async with self._writes.turn():
                    await self._items.release(
                        self._owner, ids, stops.get(batch_id, ItemStatus.cancelled)
                    )
        for row in running:
            lane = self.lanes.get(row.id) or await self._lane(row)
            lane.has_work = True  # retries may have become due
            self.lanes[row.id] = lane

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

    async def feed(self, now: float) -> None:
        """One pass over the lanes: start what capacity allows."""
        lanes = list(self.lanes.values())
        if not lanes:
            return
        self._rr = (self._rr + 1) % len(lanes)
        for lane in lanes[self._rr :] + lanes[: self._rr]:
            if self._cfg.max_in_flight - len(self.tasks) <= 0:
                return
            if not lane.buffer and not lane.has_work:
                continue
            try:
                plan = self._backends.plan(
                    lane.model,
                    lane.institution_id,
                    lane.data_class,
                    lane.input.site if lane.input is not None else None,
                )
            except NoBackendAvailable:
                continue  # nothing can serve now; the batch waits
            except ApiError as exc:
                await self._fail_lane(lane, exc, now)
                continue
            for backend in plan:
                n = min(self._capacity.room(backend), self._cfg.max_in_flight - len(self.tasks))
                if n <= 0:
                    continue
                prefetch = self._cfg.prefetch
                if lane.has_work and len(lane.buffer) < n + prefetch // 2:
                    # claim ahead: the next free slots need no trip to the store
                    want = min(n + prefetch, self._cfg.max_in_flight) - len(lane.buffer)
                    async with self._writes.turn():
                        claimed = await self._items.claim(
                            lane.batch_id, want, self._owner, self._cfg.lease_seconds
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
        async with self._writes.turn():
            claimed = await self._items.claim(
                lane.batch_id, 500, self._owner, self._cfg.lease_seconds
            )
        if not claimed:
            lane.has_work = False
        for item in [*lane.buffer, *claimed]:
            line = response_line(item.custom_id, exc.status, "", exc.body())
            self._report(Outcome(item, "failed", line))
        lane.buffer.clear()

    def _start(self, lane: Lane, item: ClaimedItem, plan: list[Backend]) -> None:
        self._capacity.start(plan[0].name)
        self._per_batch[lane.batch_id] = self._per_batch.get(lane.batch_id, 0) + 1
        self.dispatched += 1
        task = asyncio.create_task(self._run_item(lane, item, plan))
        self.tasks.add(task)

        def done(t: asyncio.Task[None]) -> None:
            self.tasks.discard(t)
            left = self._per_batch[lane.batch_id] = self._per_batch[lane.batch_id] - 1
            if left == 0:
                del self._per_batch[lane.batch_id]
            self._wake.set()

        task.add_done_callback(done)

    async def _run_item(self, lane: Lane, item: ClaimedItem, plan: list[Backend]) -> None:
        name = plan[0].name
        sent = False

        def on_send() -> None:
            nonlocal sent
            self._capacity.sent(name)
            sent = True

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
            self._report(result.outcome)
        finally:
            self._capacity.end(name, sent=sent, result=result)
