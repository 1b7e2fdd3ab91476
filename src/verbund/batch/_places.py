"""Where a batch's results lie: with its input file.

A batch whose input file lies at a site's agent (its data class is above what the access
point may hold) keeps its result parts and its output and error files in that agent's
file store too, written with the batch's data class: requests and answers pass through
the access point's memory on their way to and from the backends, never its disk.
"""

from __future__ import annotations

from dataclasses import dataclass

from verbund.files import BlobStore, FileService
from verbund.store import BatchRow, Store

__all__ = ["BatchPlace", "BatchPlaces"]


@dataclass(frozen=True, slots=True)
class BatchPlace:
    site: str | None  # the agent's site holding the batch's data (None: the access point)
    data_class: str
    blobs: BlobStore


class BatchPlaces:
    def __init__(self, store: Store, files: FileService) -> None:
        self._store = store
        self._files = files
        self._known: dict[str, BatchPlace] = {}  # a batch's place never changes

    async def of(self, batch_id: str) -> BatchPlace:
        known = self._known.get(batch_id)
        if known is not None:
            return known
        async with self._store.session() as s:
            row = await s.get(BatchRow, batch_id)
        site: str | None = None
        data_class = ""
        if row is not None:
            data_class = row.data_class
            f = await self._files.get(row.institution_id, row.input_file_id)
            site = f.site
        place = BatchPlace(site, data_class, self._files.blobs_at(site))
        self._known[batch_id] = place
        return place

    def forget(self, batch_id: str) -> None:
        self._known.pop(batch_id, None)

    def stores(self) -> list[BlobStore]:
        """Every file store results may lie in: the access point's and the agents'."""
        return [self._files.blobs, *self._files.sites.values()]
