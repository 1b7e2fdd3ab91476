"""Usage records: one per request, written off the hot path, never lost.

``record`` appends the record as one JSON line to a spool file on local disk (one
``write`` system call, no database round trip) and returns. A background task rotates the
spool and inserts whole segments into the store, then deletes them. Inserts ignore ids
already present, so a crash between insert and delete, or a restart that replays an old
segment, writes each record exactly once. If the store is unreachable, segments wait on
disk until it returns.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import orjson
from sqlalchemy import Table

from verbund.store import STORE_FAILURES, Store, UsageRow

log = logging.getLogger("verbund.usage")


@dataclass(slots=True)
class UsageRecord:
    request_id: str
    access_point: str
    institution_id: str
    key_id: str
    endpoint: str
    model: str
    site: str = ""
    backend: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    status: str = "ok"  # ok | error | incomplete | rejected
    http_status: int = 200
    latency_ms: float = 0.0
    ttft_ms: float | None = None
    stream: bool = False
    priority: str = "interactive"
    attempts: int = 1
    usage_estimated: bool = False
    user_hash: str = ""  # keyed hash of the OpenAI `user` field: for logs, not stored
    cpu_seconds: float = 0.0  # training jobs: allocated CPUs x run time
    gpu_seconds: float = 0.0  # training jobs: allocated GPUs x run time
    # bytes of request and answer bodies; set for OIP v2 inference, which has no tokens
    request_bytes: int | None = None
    response_bytes: int | None = None
    person_id: str | None = None  # the person whose own key made the request
    ts: float = field(default_factory=time.time)
    id: str = field(default_factory=lambda: os.urandom(16).hex())  # 128 random bits


_USAGE_TABLE = cast(Table, UsageRow.__table__)


class UsageRecorder:
    def __init__(self, store: Store, spool_dir: Path, flush_interval: float = 0.5) -> None:
        self._store = store
        self._dir = spool_dir
        self._dir.mkdir(parents=True, exist_ok=True)
        self._interval = flush_interval
        self._flushing = asyncio.Lock()  # the flush task, admin reports and budgets all flush
        self._seq = 0
        self._fd = -1
        self._written = 0
        self.flushed = 0
        # a spool left by a crashed process becomes a segment to insert
        current = self._dir / "current.jsonl"
        if current.exists():
            self._seal(current)
        self._open()

    def _open(self) -> None:
        self._fd = os.open(
            self._dir / "current.jsonl", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600
        )
        self._written = 0

    def _seal(self, path: Path) -> None:
        self._seq += 1
        path.rename(self._dir / f"{time.time_ns():020d}-{os.getpid()}-{self._seq}.ready")

    def record(self, rec: UsageRecord) -> None:
        os.write(self._fd, orjson.dumps(rec) + b"\n")  # orjson serialises dataclasses itself
        self._written += 1

    def _rotate(self) -> None:
        if self._written == 0:
            return
        os.close(self._fd)
        self._seal(self._dir / "current.jsonl")
        self._open()

    async def flush(self) -> int:
        """Insert every sealed segment; returns how many records were inserted."""
        async with self._flushing:
            return await self._flush()

    async def _flush(self) -> int:
        self._rotate()
        total = 0
        for seg in sorted(self._dir.glob("*.ready")):
            lines = _read_segment(seg)
            if lines:
                try:
                    await self._insert(lines)
                except STORE_FAILURES as exc:
                    rest = await self._insert_parsable(lines, seg.name)
                    if rest is None:
                        log.warning(
                            "usage flush failed (%s); %d segments kept on disk",
                            type(exc).__name__,
                            len(list(self._dir.glob("*.ready"))),
                        )
                        break
                    lines = rest
            seg.unlink()
            total += len(lines)
        self.flushed += total
        return total

    async def _insert(self, lines: list[bytes]) -> None:
        """One JSON array per segment; the database parses it (the event loop does not)."""
        if lines:
            array = b"[" + b",".join(lines) + b"]"
            await self._store.insert_json_ignoring_duplicates(_USAGE_TABLE, "id", array)

    async def _insert_parsable(self, lines: list[bytes], name: str) -> list[bytes] | None:
        """After a failed insert: a line mangled by a partial write makes the whole array
        invalid, so check each line (costly, hence only now) and insert the others. None
        if every line parses (the store itself failed) or the second insert fails too."""
        good = _valid_lines(lines, name)
        if len(good) == len(lines):
            return None
        try:
            await self._insert(good)
        except STORE_FAILURES:
            return None
        return good

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            await self.flush()

    async def aclose(self) -> None:
        await self.flush()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _read_segment(path: Path) -> list[bytes]:
    """The records of a segment, unparsed. Each was written with its newline in one
    ``os.write``, so a last line without one is torn (the process died mid-write; that
    request never completed) and is dropped."""
    data = path.read_bytes()
    lines = data.split(b"\n")
    if lines[-1]:
        log.warning("skipped a torn usage line in %s", path.name)
    return [ln for ln in lines[:-1] if ln.strip()]


def _valid_lines(lines: list[bytes], name: str) -> list[bytes]:
    good = []
    for line in lines:
        try:
            orjson.loads(line)
        except orjson.JSONDecodeError:
            log.warning("skipped a mangled usage line in %s", name)
            continue
        good.append(line)
    return good
