"""Recording what became of batch items, many at a time.

Item tasks put their :class:`Outcome` on a queue; the committer takes what has piled up
(up to 500), appends the result lines to this runner's result part of each batch in the
file store (fsynced) and only then records them in the items' rows, so a row never
points at a line that is not on disk. A result whose lease has passed on to another
runner is not recorded (its line stays unreferenced and is never read).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from verbund.batch._finalize import part_key
from verbund.batch._items import ItemStore, Outcome
from verbund.batch._places import BatchPlaces
from verbund.batch._writes import STORE_ERRORS, SerialWrites
from verbund.files import FileService

__all__ = ["Committer"]

log = logging.getLogger("verbund.batch")

_BATCH = 500


class Committer:
    def __init__(
        self,
        *,
        items: ItemStore,
        files: FileService,
        writes: SerialWrites,
        token: str,
        owner: str,
        batch_idle: Callable[[str], bool],
        nudge: Callable[[], None],
        places: BatchPlaces,
    ) -> None:
        """``batch_idle(batch_id)`` says nothing of the batch runs or waits here any more;
        ``nudge()`` then asks housekeeping to finalize it soon."""
        self._items = items
        self._files = files
        self._writes = writes
        self._token = token
        self._owner = owner
        self._batch_idle = batch_idle
        self._nudge = nudge
        self._places = places
        self._results: asyncio.Queue[Outcome | None] = asyncio.Queue()

    def put(self, outcome: Outcome) -> None:
        self._results.put_nowait(outcome)

    def stop(self) -> None:
        """Let :meth:`run` end; what is still queued is for :meth:`drain`."""
        self._results.put_nowait(None)

    def drain(self) -> list[Outcome]:
        """Everything queued and not committed yet (at shutdown)."""
        outcomes: list[Outcome] = []
        while not self._results.empty():
            o = self._results.get_nowait()
            if o is not None:
                outcomes.append(o)
        return outcomes

    async def run(self, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            first = await self._results.get()
            if first is None:
                return  # stopping: the rest is committed at shutdown
            outcomes = [first]
            while not self._results.empty() and len(outcomes) < _BATCH:
                nxt = self._results.get_nowait()
                if nxt is None:
                    self._results.put_nowait(None)
                    break
                outcomes.append(nxt)
            while True:
                try:
                    await self.commit(outcomes)
                    break
                except STORE_ERRORS as exc:
                    log.warning("batch results not recorded yet (%s); retrying", type(exc).__name__)
                    if stopping.is_set():
                        for o in outcomes:  # shutdown tries once more
                            self._results.put_nowait(o)
                        return
                    await asyncio.sleep(1.0)
            if any(self._batch_idle(o.item.batch_id) for o in outcomes):
                self._nudge()

    async def commit(self, outcomes: list[Outcome]) -> None:
        parts: dict[int, tuple[str, int, int]] = {}
        by_batch: dict[str, list[Outcome]] = {}
        for o in outcomes:
            if o.final:
                by_batch.setdefault(o.item.batch_id, []).append(o)
        for batch_id, group in by_batch.items():
            key = part_key(batch_id, self._token)
            place = await self._places.of(batch_id)
            data = b"".join(o.line for o in group)
            offset = await place.blobs.append(key, data, place.data_class)
            for o in group:
                parts[o.item.id] = (key, offset, len(o.line))
                offset += len(o.line)
        async with self._writes.turn():
            applied = await self._items.record(outcomes, parts, self._owner)
        if applied != len(outcomes):
            log.info(
                "%d batch results were for items whose lease had passed on", len(outcomes) - applied
            )
