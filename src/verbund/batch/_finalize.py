"""Ending a batch: writing its output and error files and its final status.

Exactly one runner finalizes a batch: it takes the batch with a conditional update that
only matches a batch with no pending or running items (or a finalization whose lease has
run out, because its runner died). The output and error files get ids derived from the
batch id, so a finalization that is repeated after a crash replaces its own half-written
files instead of leaving orphans. Every item contributes exactly one line: the result
recorded in its row (a result written by a runner that lost its lease is never
referenced), or an error line for an item that never ran.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Literal

from sqlalchemy import and_, delete, exists, func, or_, select, update
from sqlalchemy.exc import SQLAlchemyError

from verbund.batch._items import ItemStore, counts_from_rows
from verbund.batch._objects import BatchStatus, ItemStatus, error_line
from verbund.batch._places import BatchPlaces
from verbund.errors import ApiError, StoreError
from verbund.files import BlobStore, FilePurpose, FileService
from verbund.store import BatchItemRow, BatchRow, Store

__all__ = ["Finalizer", "part_key", "part_prefix"]

log = logging.getLogger("verbund.batch")
_I = BatchItemRow
_PAGE = 200
_NEVER_RAN = {
    ItemStatus.cancelled: ("batch_cancelled", "The batch was cancelled before this request ran."),
    ItemStatus.expired: (
        "batch_expired",
        "This request could not be executed before the completion window expired.",
    ),
}


def part_prefix(batch_id: str) -> str:
    return f"part-{batch_id}-"


def part_key(batch_id: str, token: str) -> str:
    """Where one runner appends the result lines of one batch."""
    return part_prefix(batch_id) + token


def _derived_file_id(batch_id: str, kind: str) -> str:
    return "file-" + hashlib.sha256(f"{batch_id}:{kind}".encode()).hexdigest()[:24]


class Finalizer:
    def __init__(
        self,
        store: Store,
        files: FileService,
        owner: str,
        lease: float,
        clock: Callable[[], float] = time.time,
        places: BatchPlaces | None = None,
    ) -> None:
        self._store = store
        self._files = files
        self._places = places or BatchPlaces(store, files)
        self._owner = owner
        self._lease = lease
        self._clock = clock
        self._items = ItemStore(store)

    async def _take(self, batch_id: str) -> BatchRow | None:
        now = self._store.now_sql()  # the lease goes by the store's clock, as items' do
        unfinished = exists().where(
            _I.batch_id == BatchRow.id,
            _I.status.in_([ItemStatus.pending.value, ItemStatus.running.value]),
        )
        async with self._store.session() as s, s.begin():
            result = await s.execute(
                update(BatchRow)
                .where(
                    BatchRow.id == batch_id,
                    or_(
                        and_(
                            BatchRow.status.in_(
                                [BatchStatus.in_progress.value, BatchStatus.cancelling.value]
                            ),
                            ~unfinished,
                        ),
                        and_(
                            BatchRow.status == BatchStatus.finalizing.value,
                            BatchRow.lease_until < now,
                        ),
                    ),
                )
                .values(
                    status=BatchStatus.finalizing.value,
                    finalizing_at=func.coalesce(BatchRow.finalizing_at, now),
                    lease_owner=self._owner,
                    lease_until=now + self._lease,
                )
            )
            if getattr(result, "rowcount", 0) != 1:
                return None
            return await s.get(BatchRow, batch_id)

    async def finalize(self, batch_id: str) -> bool:
        """Finalize the batch if it is ready and nobody else is at it; True if done here."""
        row = await self._take(batch_id)
        if row is None:
            return False
        final = BatchStatus(row.final_status or BatchStatus.completed)
        async with self._store.session() as s:
            by_status = await s.execute(
                select(
                    _I.status,
                    func.count(),
                    func.coalesce(func.sum(_I.prompt_tokens), 0),
                    func.coalesce(func.sum(_I.completion_tokens), 0),
                )
                .where(_I.batch_id == batch_id)
                .group_by(_I.status)
            )
            counts = counts_from_rows(row.total, [(r[0], r[1], r[2], r[3]) for r in by_status])
        output_id = error_id = None
        place = await self._places.of(batch_id)  # outputs lie where the input lies
        if counts.completed:
            output_id = _derived_file_id(batch_id, "output")
            await self._files.create(
                row.institution_id,
                FilePurpose.batch_output,
                f"{batch_id}_output.jsonl",
                self._lines(batch_id, "output", place.blobs),
                file_id=output_id,
                site=place.site,
                data_class=place.data_class or None,
            )
        if counts.failed:
            error_id = _derived_file_id(batch_id, "error")
            await self._files.create(
                row.institution_id,
                FilePurpose.batch_output,
                f"{batch_id}_error.jsonl",
                self._lines(batch_id, "error", place.blobs),
                file_id=error_id,
                site=place.site,
                data_class=place.data_class or None,
            )
        now = self._clock()
        async with self._store.session() as s, s.begin():
            result = await s.execute(
                update(BatchRow)
                .where(
                    BatchRow.id == batch_id,
                    BatchRow.lease_owner == self._owner,
                    BatchRow.status == BatchStatus.finalizing.value,
                )
                .values(
                    {
                        "status": final.value,
                        f"{final.value}_at": now,
                        "output_file_id": output_id,
                        "error_file_id": error_id,
                        "completed": counts.completed,
                        "failed": counts.failed,
                        "input_tokens": counts.input_tokens,
                        "output_tokens": counts.output_tokens,
                        "lease_owner": None,
                        "lease_until": 0.0,
                    }
                )
            )
            if getattr(result, "rowcount", 0) != 1:
                log.warning(
                    "batch %s: lost the finalization lease; another runner ends it", batch_id
                )
                return False
            await s.execute(delete(_I).where(_I.batch_id == batch_id))
        for key in await place.blobs.keys(part_prefix(batch_id)):
            await place.blobs.delete(key)
        self._places.forget(batch_id)
        log.info(
            "batch %s %s: %d completed, %d failed",
            batch_id,
            final.value,
            counts.completed,
            counts.failed,
        )
        return True

    async def sweep_parts(self) -> None:
        """Delete result parts of batches that have ended (left by a crash at the very end),
        here and at the agents that hold batches' data."""
        for blobs in self._places.stores():
            await self._sweep_parts(blobs)

    async def _sweep_parts(self, blobs: BlobStore) -> None:
        try:
            keys = await blobs.keys("part-")
            if not keys:
                return
            ids = {k[len("part-") :].rsplit("-", 1)[0] for k in keys}
            async with self._store.session() as s:
                live = set(
                    (
                        await s.execute(
                            select(BatchRow.id).where(
                                BatchRow.id.in_(ids),
                                BatchRow.status.in_(
                                    [
                                        BatchStatus.in_progress,
                                        BatchStatus.cancelling,
                                        BatchStatus.finalizing,
                                    ]
                                ),
                            )
                        )
                    ).scalars()
                )
            for k in keys:
                if k[len("part-") :].rsplit("-", 1)[0] not in live:
                    await blobs.delete(k)
        except (SQLAlchemyError, StoreError, OSError, ApiError) as exc:
            log.warning("could not sweep old batch result parts (%s)", type(exc).__name__)

    async def _lines(
        self, batch_id: str, which: Literal["output", "error"], blobs: BlobStore
    ) -> AsyncIterator[bytes]:
        last = 0
        while True:
            async with self._store.session() as s:
                rows = (
                    await s.execute(
                        select(
                            _I.line,
                            _I.custom_id,
                            _I.status,
                            _I.result_part,
                            _I.result_offset,
                            _I.result_length,
                        )
                        .where(_I.batch_id == batch_id, _I.line > last)
                        .order_by(_I.line)
                        .limit(_PAGE)
                    )
                ).all()
            if not rows:
                return
            out: list[bytes] = []
            for _line, custom_id, status, part, offset, length in rows:
                if which == "output" and status == ItemStatus.done and part:
                    out.append(await blobs.read_range(part, offset, length))
                elif which == "error":
                    if status == ItemStatus.failed and part:
                        out.append(await blobs.read_range(part, offset, length))
                    elif status in _NEVER_RAN:
                        code, message = _NEVER_RAN[ItemStatus(status)]
                        out.append(error_line(custom_id, code, message))
            if out:
                yield b"".join(out)
            last = rows[-1][0]
