"""Batches as the API sees them: create (with validation), get, list, cancel.

Creating a batch validates the whole input file first; an invalid file gives a batch in
status ``failed`` with its errors by line, and nothing runs. A valid file gives a batch
``in_progress`` and one item per request, written in the same transaction, so an
accepted batch is never lost. The runner (:mod:`verbund.batch._runner`) does the rest.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, insert, or_, select, update

from verbund.batch._items import ItemStore
from verbund.batch._objects import ACTIVE, BatchCounts, BatchStatus, ItemStatus, batch_to_api
from verbund.batch._validate import ENDPOINTS, oip_model, validate_input
from verbund.config import BatchConfig
from verbund.errors import BadRequest, Conflict, NotFound
from verbund.files import FilePurpose, FileService
from verbund.store import BatchItemRow, BatchRow, Store

__all__ = ["BatchRequest", "BatchService", "BodyCheck", "ModelCheck", "parse_create"]

_ID = re.compile(r"^batch_[A-Za-z0-9]{1,64}$")
COMPLETION_WINDOWS = {"24h": 24 * 3600.0}
MAX_METADATA_KEYS = 16

BodyCheck = Callable[[dict[str, Any]], str]
"""Checks one request body for the batch's endpoint; returns its model or raises ApiError."""
ModelCheck = Callable[[str], None]
"""Raises ApiError when the institution may not use the model (or it does not exist)."""


@dataclass(frozen=True, slots=True)
class BatchRequest:
    institution_id: str
    key_id: str
    data_class: str
    input_file_id: str
    endpoint: str
    completion_window: str
    metadata: dict[str, str] | None


def parse_create(
    body: dict[str, Any], institution_id: str, key_id: str, data_class: str
) -> BatchRequest:
    """The fields of ``POST /v1/batches``, checked; a clear 400 naming the field otherwise."""
    input_file_id = body.get("input_file_id")
    if not isinstance(input_file_id, str) or not input_file_id:
        raise BadRequest(
            "Missing required parameter: 'input_file_id'.",
            code="missing_required_parameter",
            param="input_file_id",
        )
    endpoint = body.get("endpoint")
    if endpoint not in ENDPOINTS and not (isinstance(endpoint, str) and oip_model(endpoint)):
        raise BadRequest(
            f"'endpoint' must be one of {', '.join(ENDPOINTS)}, or an Open Inference "
            "Protocol model's /v2/models/{name}/infer (at most 64 characters).",
            code="invalid_value",
            param="endpoint",
        )
    window = body.get("completion_window")
    if window not in COMPLETION_WINDOWS:
        raise BadRequest(
            "'completion_window' must be '24h'.", code="invalid_value", param="completion_window"
        )
    metadata = body.get("metadata")
    if metadata is not None:
        ok = (
            isinstance(metadata, dict)
            and len(metadata) <= MAX_METADATA_KEYS
            and all(
                isinstance(k, str) and len(k) <= 64 and isinstance(v, str) and len(v) <= 512
                for k, v in metadata.items()
            )
        )
        if not ok:
            raise BadRequest(
                "'metadata' must be an object of at most 16 string values (keys up to 64 "
                "characters, values up to 512).",
                code="invalid_value",
                param="metadata",
            )
    return BatchRequest(
        institution_id=institution_id,
        key_id=key_id,
        data_class=data_class,
        input_file_id=input_file_id,
        endpoint=str(endpoint),
        completion_window=str(window),
        metadata=metadata,
    )


def _not_found(batch_id: str) -> NotFound:
    return NotFound(f"No such Batch object: {batch_id[:80]}", param="batch_id")


class BatchService:
    def __init__(self, store: Store, files: FileService, config: BatchConfig) -> None:
        self._store = store
        self._files = files
        self._config = config
        self._items = ItemStore(store)
        self.on_created: Callable[[], None] = lambda: None
        files.add_delete_guard(self.guard_input_file)

    async def create(
        self, req: BatchRequest, check_body: BodyCheck, check_model: ModelCheck
    ) -> dict[str, Any]:
        f = await self._files.get(req.institution_id, req.input_file_id)
        if f.purpose != FilePurpose.batch:
            raise BadRequest(
                f"The input file must have purpose 'batch', not '{f.purpose}'.",
                code="invalid_file_purpose",
                param="input_file_id",
            )
        v = await validate_input(
            self._files.read(f),
            req.endpoint,
            max_requests=self._config.max_requests,
            max_line_bytes=self._config.max_line_bytes,
            check_body=check_body,
            check_model=check_model,
        )
        now = time.time()
        row = BatchRow(
            id="batch_" + secrets.token_hex(12),
            institution_id=req.institution_id,
            key_id=req.key_id,
            data_class=req.data_class,
            endpoint=req.endpoint,
            model=v.model,
            input_file_id=f.id,
            completion_window=req.completion_window,
            meta=req.metadata,
            created_at=now,
            expires_at=now + COMPLETION_WINDOWS[req.completion_window],
            total=0,
            completed=0,
            failed=0,
            input_tokens=0,
            output_tokens=0,
            lease_until=0.0,
        )
        if v.error_count:
            row.status, row.failed_at = BatchStatus.failed.value, now
            row.errors = [e.to_api() for e in v.errors]
        else:
            row.status, row.in_progress_at = BatchStatus.in_progress.value, now
            row.total = len(v.items)
        items = [] if v.error_count else v.items  # nothing of an invalid file runs
        async with self._store.session() as s, s.begin():
            s.add(row)
            await s.flush()
            for i in range(0, len(items), 2000):
                await s.execute(
                    insert(BatchItemRow),
                    [
                        {
                            "batch_id": row.id,
                            "line": it.line,
                            "custom_id": it.custom_id,
                            "input_offset": it.offset,
                            "input_length": it.length,
                            "status": ItemStatus.pending.value,
                            "attempts": 0,
                            "next_try_at": 0.0,
                            "lease_until": 0.0,
                            "result_offset": 0,
                            "result_length": 0,
                            "prompt_tokens": 0,
                            "completion_tokens": 0,
                        }
                        for it in items[i : i + 2000]
                    ],
                )
        if not v.error_count:
            self.on_created()
        return batch_to_api(row, BatchCounts(row.total, 0, 0))

    async def _row(self, institution_id: str, batch_id: str) -> BatchRow:
        if not _ID.fullmatch(batch_id):
            raise _not_found(batch_id)
        row = await self._store.owned(BatchRow, batch_id, institution_id)
        if row is None:
            raise _not_found(batch_id)
        return row

    async def get(self, institution_id: str, batch_id: str) -> dict[str, Any]:
        row = await self._row(institution_id, batch_id)
        async with self._store.session() as s:
            counts = await self._items.batch_counts(s, row)
        return batch_to_api(row, counts)

    async def list(
        self, institution_id: str, *, after: str | None = None, limit: int = 20
    ) -> dict[str, Any]:
        q = select(BatchRow).where(BatchRow.institution_id == institution_id)
        if after:
            cur = await self._row(institution_id, after)
            q = q.where(
                or_(
                    BatchRow.created_at < cur.created_at,
                    and_(BatchRow.created_at == cur.created_at, BatchRow.id < cur.id),
                )
            )
        q = q.order_by(BatchRow.created_at.desc(), BatchRow.id.desc()).limit(limit + 1)
        async with self._store.session() as s:
            rows = list((await s.execute(q)).scalars())
            data = [batch_to_api(r, await self._items.batch_counts(s, r)) for r in rows[:limit]]
        return {
            "object": "list",
            "data": data,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
            "has_more": len(rows) > limit,
        }

    async def cancel(self, institution_id: str, batch_id: str) -> dict[str, Any]:
        row = await self._row(institution_id, batch_id)
        now = time.time()
        async with self._store.session() as s, s.begin():
            result = await s.execute(
                update(BatchRow)
                .where(
                    BatchRow.id == row.id,
                    BatchRow.status.in_([BatchStatus.validating, BatchStatus.in_progress]),
                    BatchRow.final_status.is_(None),
                )
                .values(
                    status=BatchStatus.cancelling.value, cancelling_at=now, final_status="cancelled"
                )
            )
            if getattr(result, "rowcount", 0) == 1:
                await self._items.stop_unstarted(s, row.id, ItemStatus.cancelled)
        row = await self._row(institution_id, batch_id)
        if row.status not in (BatchStatus.cancelling, BatchStatus.cancelled):
            raise Conflict(
                f"A batch in status '{row.status}' cannot be cancelled.", param="batch_id"
            )
        self.on_created()
        return await self.get(institution_id, batch_id)

    async def guard_input_file(self, institution_id: str, file_id: str) -> None:
        """Refuse deleting the input file of a batch that is still running."""
        async with self._store.session() as s:
            running = (
                await s.execute(
                    select(BatchRow.id)
                    .where(
                        BatchRow.institution_id == institution_id,
                        BatchRow.input_file_id == file_id,
                        BatchRow.status.in_([st.value for st in ACTIVE]),
                    )
                    .limit(1)
                )
            ).scalar_one_or_none()
        if running is not None:
            raise Conflict(
                f"The file is the input of batch {running}, which has not ended yet.",
                param="file_id",
            )
