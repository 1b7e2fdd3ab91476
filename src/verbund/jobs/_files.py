"""Where a job's training files come from: a small interface and a folder-backed default.

The Files API (``POST /v1/files``) is the real source; until it is wired in, files are
read from ``<files_dir>/<institution>/<file_id>`` with an optional ``<file_id>.json``
beside it (``{"data_class": "confidential", "filename": "digits.csv"}``).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from verbund.config import DataClass
from verbund.errors import BadRequest, NotFound
from verbund.files import FileService

_FILE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


@dataclass(frozen=True, slots=True)
class TrainingFile:
    id: str
    path: Path | None  # on this host's disk (None: in a site agent's file store)
    size: int
    data_class: DataClass | None = None  # the class it was uploaded with, where known
    filename: str = ""
    site: str | None = None  # the site whose agent holds it (None: this host)
    key: str = ""  # its blob key in that site's file store
    # Its bytes in clear, streamed, for a file on this host that has no readable path
    # (a sealed file store): decrypted in memory only, never to this host's disk.
    stream: Callable[[], AsyncIterator[bytes]] | None = None


class TrainingFileSource(Protocol):
    async def open(self, institution: str, file_id: str) -> TrainingFile:
        """The institution's file; :class:`NotFound` if it has none by that id."""
        ...


class DirectoryFileSource:
    def __init__(self, root: Path) -> None:
        self.root = root

    async def open(self, institution: str, file_id: str) -> TrainingFile:
        return await asyncio.to_thread(self._open, institution, file_id)

    def _open(self, institution: str, file_id: str) -> TrainingFile:
        missing = NotFound(f"No file with id '{file_id}'.", param="training_file")
        if not _FILE_ID.match(file_id) or file_id.endswith(".json"):
            raise missing
        path = self.root / institution / file_id
        try:
            size = path.stat().st_size
        except OSError:
            raise missing from None
        if not path.is_file():
            raise missing
        meta: dict[str, str] = {}
        try:
            loaded = json.loads(path.with_name(file_id + ".json").read_text())
            if isinstance(loaded, dict):
                meta = {k: str(v) for k, v in loaded.items()}
        except (OSError, ValueError):
            pass
        data_class = None
        if meta.get("data_class") in DataClass.__members__:
            data_class = DataClass(meta["data_class"])
        return TrainingFile(file_id, path, size, data_class, meta.get("filename", ""))


class FileServiceSource:
    """Training files uploaded through the Files API (``purpose = "fine-tune"``)."""

    def __init__(self, files: FileService) -> None:
        self._files = files

    async def open(self, institution: str, file_id: str) -> TrainingFile:
        f = await self._files.get(institution, file_id)  # NotFound for other tenants' ids
        if f.purpose != "fine-tune":
            raise BadRequest(
                f"File '{file_id}' was uploaded with purpose '{f.purpose}', not 'fine-tune'.",
                param="training_file",
            )
        data_class = None
        if f.data_class is not None and f.data_class in DataClass.__members__:
            data_class = DataClass(f.data_class)
        path = self._files.local_path(f)
        sealed = f.site is None and path is None

        def stream() -> AsyncIterator[bytes]:
            return self._files.read(f)

        return TrainingFile(
            id=f.id,
            path=path,
            size=f.bytes,
            data_class=data_class,
            filename=f.filename,
            site=f.site,
            key=f.blob_key,
            stream=stream if sealed else None,
        )


class ChainedSource:
    """The Files API first, then files an operator placed in the training folder by hand."""

    def __init__(self, *sources: TrainingFileSource) -> None:
        self._sources = sources

    async def open(self, institution: str, file_id: str) -> TrainingFile:
        missing: NotFound | None = None
        for source in self._sources:
            try:
                return await source.open(institution, file_id)
            except NotFound as exc:
                missing = exc
        assert missing is not None
        raise missing
