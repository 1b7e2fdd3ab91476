"""Files of institutions: metadata in the store, contents in the file store.

Every lookup is scoped to an institution: another institution's file id is "not found",
indistinguishable from an id that never existed. File names from clients are kept only
as metadata (cleaned of directories and control characters); the blob key on disk is
always generated here.

Writes are ordered so that a row never points to a missing blob: a new blob is complete
and durable before its row is written, and a row is deleted before its blob. When the
row cannot be written (the store is away, the request was cancelled) the blob is removed
at once; a blob left behind anyway (the process died in between, or removing failed) has
no row, and :meth:`FileService.sweep` removes it once two sweeps in a row found it so.
"""

from __future__ import annotations

import asyncio
import builtins
import enum
import logging
import re
import secrets
import time
import unicodedata
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import and_, delete, or_, select

from verbund.errors import BadRequest, NotFound, PayloadTooLarge
from verbund.files._blobs import BlobStore, BlobWriter
from verbund.store import STORE_FAILURES, FileRow, Store

__all__ = [
    "UPLOAD_PURPOSES",
    "DeleteGuard",
    "FileObject",
    "FilePage",
    "FilePurpose",
    "FileService",
    "Upload",
    "clean_filename",
    "new_file_id",
]

_ID = re.compile(r"^file-[A-Za-z0-9]{1,64}$")
MAX_FILENAME_BYTES = 255
_BLOB_PREFIX = "f-"
SWEEP_SECONDS = 600.0
"""How often leftover blobs are looked for; one is removed after two sweeps without a row,
so an upload between writing its blob and its row is never taken for a leftover."""

log = logging.getLogger("verbund.files")


class FilePurpose(enum.StrEnum):
    batch = "batch"
    batch_output = "batch_output"
    fine_tune = "fine-tune"
    fine_tune_results = "fine-tune-results"
    user_data = "user_data"


UPLOAD_PURPOSES = frozenset({FilePurpose.batch, FilePurpose.fine_tune, FilePurpose.user_data})

DeleteGuard = Callable[[str, str], Awaitable[None]]
"""Called with (institution id, file id) before a delete; raises an ApiError to refuse."""


def new_file_id() -> str:
    return "file-" + secrets.token_hex(12)


# bidirectional controls make a name show other than it is ("invoice\u202egpj.exe")
_BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e")
_BIDI_CONTROLS |= frozenset("\u2066\u2067\u2068\u2069")


def clean_filename(raw: str) -> str:
    """The name a client gave, without directories; control characters are refused, and
    so are bidirectional controls, which would show others a name other than the file's."""
    if any(unicodedata.category(ch) == "Cc" or ch in _BIDI_CONTROLS for ch in raw):
        raise BadRequest(
            "The filename contains control characters.", code="invalid_filename", param="file"
        )
    name = raw.replace("\\", "/").rsplit("/", 1)[-1].strip()
    if name in ("", ".", ".."):
        raise BadRequest(
            "The upload needs a filename (without directories).",
            code="invalid_filename",
            param="file",
        )
    if len(name.encode()) > MAX_FILENAME_BYTES:
        raise BadRequest(
            f"The filename is longer than {MAX_FILENAME_BYTES} bytes.",
            code="invalid_filename",
            param="file",
        )
    return name


@dataclass(frozen=True, slots=True)
class FileObject:
    id: str
    institution_id: str
    purpose: str
    filename: str
    bytes: int
    created_at: float
    expires_at: float | None
    blob_key: str

    @classmethod
    def from_row(cls, row: FileRow) -> FileObject:
        return cls(
            id=row.id,
            institution_id=row.institution_id,
            purpose=row.purpose,
            filename=row.filename,
            bytes=row.bytes,
            created_at=row.created_at,
            expires_at=row.expires_at,
            blob_key=row.blob_key,
        )

    def to_api(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "file",
            "bytes": self.bytes,
            "created_at": int(self.created_at),
            "expires_at": None if self.expires_at is None else int(self.expires_at),
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "status_details": None,
        }


@dataclass(frozen=True, slots=True)
class FilePage:
    data: list[FileObject]
    has_more: bool

    def to_api(self) -> dict[str, Any]:
        return {
            "object": "list",
            "data": [f.to_api() for f in self.data],
            "first_id": self.data[0].id if self.data else None,
            "last_id": self.data[-1].id if self.data else None,
            "has_more": self.has_more,
        }


class Upload:
    """A file arriving in pieces; over the limit it fails with 413 and leaves nothing."""

    def __init__(self, service: FileService, writer: BlobWriter, key: str, limit: int) -> None:
        self._service = service
        self._writer = writer
        self._key = key
        self._limit = limit
        self.size = 0
        self._done = False

    async def write(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self._limit:
            raise PayloadTooLarge(f"The file exceeds the upload limit of {self._limit} bytes.")
        await self._writer.write(data)

    async def finish(
        self,
        institution_id: str,
        purpose: str,
        filename: str,
        *,
        key_id: str | None = None,
        expires_at: float | None = None,
    ) -> FileObject:
        self._done = True
        try:
            await self._writer.commit()
        except BaseException:
            await self._writer.abort()
            raise
        return await self._service._insert(
            new_file_id(),
            institution_id,
            purpose,
            filename,
            self.size,
            self._key,
            key_id=key_id,
            expires_at=expires_at,
        )

    async def abort(self) -> None:
        if not self._done:
            self._done = True
            await self._writer.abort()


class FileService:
    def __init__(self, store: Store, blobs: BlobStore, max_upload_bytes: int) -> None:
        self._store = store
        self.blobs = blobs
        self.max_upload_bytes = max_upload_bytes
        self._guards: list[DeleteGuard] = []
        self._suspects: set[str] = set()  # blobs without a row at the last sweep

    def add_delete_guard(self, guard: DeleteGuard) -> None:
        """Let another feature refuse deleting a file it still needs (e.g. a batch's input)."""
        self._guards.append(guard)

    def begin_upload(self) -> Upload:
        key = _blob_key()
        return Upload(self, self.blobs.writer(key), key, self.max_upload_bytes)

    async def create(
        self,
        institution_id: str,
        purpose: str,
        filename: str,
        data: bytes | AsyncIterable[bytes],
        *,
        file_id: str | None = None,
    ) -> FileObject:
        """Store a file made inside the access point; a given ``file_id`` is replaced."""
        key = _blob_key()
        writer = self.blobs.writer(key)
        size = 0
        try:
            if isinstance(data, bytes):
                await writer.write(data)
                size = len(data)
            else:
                async for chunk in data:
                    await writer.write(chunk)
                    size += len(chunk)
            await writer.commit()
        except BaseException:
            await writer.abort()
            raise
        return await self._insert(
            file_id or new_file_id(), institution_id, purpose, filename, size, key
        )

    async def _insert(
        self,
        file_id: str,
        institution_id: str,
        purpose: str,
        filename: str,
        size: int,
        key: str,
        *,
        key_id: str | None = None,
        expires_at: float | None = None,
    ) -> FileObject:
        row = FileRow(
            id=file_id,
            institution_id=institution_id,
            purpose=purpose,
            filename=filename,
            bytes=size,
            created_at=time.time(),
            expires_at=expires_at,
            blob_key=key,
            key_id=key_id,
        )
        old_key: str | None = None
        try:
            async with self._store.session() as s, s.begin():
                old = await s.get(FileRow, file_id)
                if old is not None:
                    old_key = old.blob_key
                    await s.delete(old)
                    await s.flush()
                s.add(row)
        except BaseException:
            # no row: the blob must not stay (StoreUnavailable, cancelled, a bug alike);
            # shielded, so that a cancellation does not stop the clean-up itself
            await asyncio.shield(self._discard(key))
            raise
        if old_key is not None:
            await self.blobs.delete(old_key)
        return FileObject.from_row(row)

    async def get(self, institution_id: str, file_id: str) -> FileObject:
        if not _ID.fullmatch(file_id):
            raise _not_found(file_id)
        row = await self._store.owned(FileRow, file_id, institution_id)
        if row is None:
            raise _not_found(file_id)
        return FileObject.from_row(row)

    async def list(
        self,
        institution_id: str,
        *,
        purpose: str | None = None,
        limit: int = 10_000,
        order: Literal["asc", "desc"] = "desc",
        after: str | None = None,
    ) -> FilePage:
        q = select(FileRow).where(FileRow.institution_id == institution_id)
        if purpose:
            q = q.where(FileRow.purpose == purpose)
        if after:
            cursor = await self.get(institution_id, after)
            c_at, c_id = cursor.created_at, cursor.id
            if order == "desc":
                q = q.where(
                    or_(
                        FileRow.created_at < c_at,
                        and_(FileRow.created_at == c_at, FileRow.id < c_id),
                    )
                )
            else:
                q = q.where(
                    or_(
                        FileRow.created_at > c_at,
                        and_(FileRow.created_at == c_at, FileRow.id > c_id),
                    )
                )
        if order == "desc":
            q = q.order_by(FileRow.created_at.desc(), FileRow.id.desc())
        else:
            q = q.order_by(FileRow.created_at.asc(), FileRow.id.asc())
        async with self._store.session() as s:
            rows = (await s.execute(q.limit(limit + 1))).scalars().all()
        return FilePage([FileObject.from_row(r) for r in rows[:limit]], len(rows) > limit)

    async def delete(self, institution_id: str, file_id: str) -> None:
        f = await self.get(institution_id, file_id)
        for guard in self._guards:
            await guard(institution_id, file_id)
        async with self._store.session() as s, s.begin():
            await s.execute(
                delete(FileRow).where(FileRow.id == f.id, FileRow.institution_id == institution_id)
            )
        await self.blobs.delete(f.blob_key)

    async def _discard(self, key: str) -> None:
        try:
            await self.blobs.delete(key)
        except OSError as exc:  # the sweep removes it later
            log.warning("could not remove blob %s of an unrecorded file: %s", key, exc)

    async def sweep(self) -> builtins.list[str]:
        """Remove blobs that have no row now and had none at the previous sweep; returns
        the removed keys. Blobs without a row this time are remembered for the next."""
        keys = await self.blobs.keys(_BLOB_PREFIX)
        referenced: set[str] = set()
        async with self._store.session() as s:
            for i in range(0, len(keys), 500):
                chunk = keys[i : i + 500]
                found = await s.execute(select(FileRow.blob_key).where(FileRow.blob_key.in_(chunk)))
                referenced.update(found.scalars())
        orphans = set(keys) - referenced
        removed = sorted(orphans & self._suspects)
        for key in removed:
            await self.blobs.delete(key)
        self._suspects = orphans - set(removed)
        if removed:
            log.warning("removed %d file blob(s) without a file row", len(removed))
        return removed

    async def run_sweeper(self, interval: float = SWEEP_SECONDS) -> None:
        while True:
            try:
                await self.sweep()
            except STORE_FAILURES as exc:
                log.warning("file sweep: store unavailable (%s); next time", type(exc).__name__)
            await asyncio.sleep(interval)

    def local_path(self, f: FileObject) -> Path | None:
        """The file on local disk, where the blob store keeps files locally."""
        local = getattr(self.blobs, "local_path", None)
        return local(f.blob_key) if callable(local) else None

    def read(self, f: FileObject) -> AsyncIterator[bytes]:
        return self.blobs.read(f.blob_key)

    async def read_range(self, f: FileObject, offset: int, length: int) -> bytes:
        return await self.blobs.read_range(f.blob_key, offset, length)


def _blob_key() -> str:
    return _BLOB_PREFIX + uuid.uuid4().hex


def _not_found(file_id: str) -> NotFound:
    return NotFound(f"No such File object: {file_id[:80]}", param="file_id")
