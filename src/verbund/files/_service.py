"""Files of institutions: metadata in the store, contents in the file store.

Every lookup is scoped to an institution: another institution's file id is "not found",
indistinguishable from an id that never existed. File names from clients are kept only
as metadata (cleaned of directories and control characters); the blob key on disk is
always generated here.

Where the bytes lie depends on their data class: a file of a class above what the access
point's host may hold (``[gateway] max_data_class``) is written to the file store of a
compliant site's agent (:class:`~verbund.files.AgentBlobStore`), streamed through and
never written here; the row (metadata only) names the site. Every read, range read and
delete goes to the file store the row names.

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
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import and_, delete, or_, select

from verbund.errors import ApiError, BadRequest, NotFound, PayloadTooLarge
from verbund.files._blobs import BlobStore, BlobWriter, write_blob
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
    site: str | None = None  # the agent's site holding the bytes; None: the local store
    data_class: str | None = None

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
            site=row.site,
            data_class=row.data_class,
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

    def __init__(
        self,
        service: FileService,
        writer: BlobWriter,
        key: str,
        limit: int,
        site: str | None = None,
        data_class: str | None = None,
    ) -> None:
        self._service = service
        self._writer = writer
        self._key = key
        self._limit = limit
        self.site = site
        self.data_class = data_class
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
            site=self.site,
            data_class=self.data_class,
            key_id=key_id,
            expires_at=expires_at,
        )

    async def abort(self) -> None:
        if not self._done:
            self._done = True
            await self._writer.abort()


class FileService:
    def __init__(
        self,
        store: Store,
        blobs: BlobStore,
        max_upload_bytes: int,
        sites: Mapping[str, BlobStore] | None = None,
    ) -> None:
        self._store = store
        self.blobs = blobs  # the access point's own file store
        self.sites: Mapping[str, BlobStore] = sites or {}  # site agents' file stores
        self.max_upload_bytes = max_upload_bytes
        self._guards: list[DeleteGuard] = []
        self._suspects: set[str] = set()  # blobs without a row at the last sweep

    def add_delete_guard(self, guard: DeleteGuard) -> None:
        """Let another feature refuse deleting a file it still needs (e.g. a batch's input)."""
        self._guards.append(guard)

    def blobs_at(self, site: str | None) -> BlobStore:
        """The file store of ``site``'s agent (None: the access point's own)."""
        if site is None:
            return self.blobs
        found = self.sites.get(site)
        if found is None:
            raise _site_gone(site)
        return found

    def begin_upload(self, site: str | None = None, data_class: str | None = None) -> Upload:
        key = _blob_key()
        writer = self.blobs_at(site).writer(key, data_class or "")
        return Upload(self, writer, key, self.max_upload_bytes, site, data_class)

    async def create(
        self,
        institution_id: str,
        purpose: str,
        filename: str,
        data: bytes | AsyncIterable[bytes],
        *,
        file_id: str | None = None,
        site: str | None = None,
        data_class: str | None = None,
    ) -> FileObject:
        """Store a file made inside the access point (at ``site``'s agent, if given); a
        given ``file_id`` is replaced."""
        key = _blob_key()
        size = await write_blob(self.blobs_at(site), key, data, data_class or "")
        return await self._insert(
            file_id or new_file_id(),
            institution_id,
            purpose,
            filename,
            size,
            key,
            site=site,
            data_class=data_class,
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
        site: str | None = None,
        data_class: str | None = None,
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
            site=site,
            data_class=data_class,
            key_id=key_id,
        )
        old: tuple[str, str | None] | None = None
        try:
            async with self._store.session() as s, s.begin():
                previous = await s.get(FileRow, file_id)
                if previous is not None:
                    old = (previous.blob_key, previous.site)
                    await s.delete(previous)
                    await s.flush()
                s.add(row)
        except BaseException:
            # no row: the blob must not stay (StoreUnavailable, cancelled, a bug alike);
            # shielded, so that a cancellation does not stop the clean-up itself
            await asyncio.shield(self._discard(key, site))
            raise
        if old is not None:
            await self.blobs_at(old[1]).delete(old[0])
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
        await self.blobs_at(f.site).delete(f.blob_key)

    async def _discard(self, key: str, site: str | None = None) -> None:
        try:
            await self.blobs_at(site).delete(key)
        except (OSError, ApiError) as exc:  # the sweep removes it later
            log.warning("could not remove blob %s of an unrecorded file: %s", key, exc)

    async def sweep(self) -> builtins.list[str]:
        """Remove blobs that have no row now and had none at the previous sweep, here and
        at every reachable site agent; returns the removed keys. Blobs without a row this
        time are remembered for the next."""
        removed: builtins.list[str] = []
        suspects: set[str] = set()
        stores: builtins.list[tuple[str | None, BlobStore]] = [(None, self.blobs)]
        stores += list(self.sites.items())
        for site, blobs in stores:
            try:
                keys = await blobs.keys(_BLOB_PREFIX)
            except ApiError as exc:  # an agent away: its leftovers wait for the next sweep
                log.warning("file sweep: site %s not reachable: %s", site, exc.message)
                continue
            referenced: set[str] = set()
            async with self._store.session() as s:
                for i in range(0, len(keys), 500):
                    chunk = keys[i : i + 500]
                    found = await s.execute(
                        select(FileRow.blob_key).where(FileRow.blob_key.in_(chunk))
                    )
                    referenced.update(found.scalars())
            orphans = {f"{site}/{k}" for k in set(keys) - referenced}
            for tagged in sorted(orphans & self._suspects):
                await blobs.delete(tagged.partition("/")[2])
                removed.append(tagged.partition("/")[2])
            suspects |= orphans - self._suspects
        self._suspects = suspects
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
        if f.site is not None:
            return None
        local = getattr(self.blobs, "local_path", None)
        return local(f.blob_key) if callable(local) else None

    def read(self, f: FileObject) -> AsyncIterator[bytes]:
        return self.blobs_at(f.site).read(f.blob_key)

    async def read_range(self, f: FileObject, offset: int, length: int) -> bytes:
        return await self.blobs_at(f.site).read_range(f.blob_key, offset, length)


def _blob_key() -> str:
    return _BLOB_PREFIX + uuid.uuid4().hex


def _site_gone(site: str) -> NotFound:
    return NotFound(f"The file lies at site {site}, which this access point no longer reaches.")


def _not_found(file_id: str) -> NotFound:
    return NotFound(f"No such File object: {file_id[:80]}", param="file_id")
