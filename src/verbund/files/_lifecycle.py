"""How long files live: ``expires_after`` with an institution's default and maximum,
and the purge of files past their time (run by the retention task)."""

from __future__ import annotations

import logging
import time

from sqlalchemy import select

from verbund.errors import ApiError, BadRequest
from verbund.files._service import FileService
from verbund.store import FileRow, Store

__all__ = ["FileLifecycle", "file_expiry"]

log = logging.getLogger("verbund.files")
_CHUNK = 500


def file_expiry(
    requested: int | None, default: int, maximum: int, created_at: float
) -> float | None:
    """When a file expires: the upload's ``expires_after.seconds``, else the
    institution's default; never later than its maximum (a maximum also applies to a
    file that asked for nothing). An upload asking for more than the maximum is a 400,
    not a silent cut, so the client learns its data will go sooner than it asked."""
    if requested is not None and maximum and requested > maximum:
        raise BadRequest(
            f"'expires_after.seconds' is above your institution's maximum of {maximum}.",
            code="invalid_value",
            param="expires_after.seconds",
        )
    seconds = requested or default or maximum
    return created_at + seconds if seconds else None


class FileLifecycle:
    def __init__(self, store: Store, files: FileService) -> None:
        self._store = store
        self._files = files

    async def purge_expired(self, now: float | None = None) -> dict[str, int]:
        """Delete files past ``expires_at``: row, then bytes. A file another feature
        still needs (a running batch's input) waits for the next round."""
        cutoff = time.time() if now is None else now
        removed = 0
        skipped: set[str] = set()
        while True:
            async with self._store.session() as s:
                rows = (
                    await s.execute(
                        select(FileRow.id, FileRow.institution_id)
                        .where(FileRow.expires_at.is_not(None), FileRow.expires_at <= cutoff)
                        .order_by(FileRow.expires_at)
                        .limit(_CHUNK + len(skipped))
                    )
                ).all()
            todo = [(fid, inst) for fid, inst in rows if fid not in skipped]
            if not todo:
                break
            for file_id, institution in todo:
                try:
                    await self._files.delete(institution, file_id)
                    removed += 1
                except ApiError as exc:  # still in use, or gone meanwhile
                    log.info("expired file %s kept for now: %s", file_id, exc)
                    skipped.add(file_id)
        return {"files": removed}
