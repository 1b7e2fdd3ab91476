"""The usage spool: records survive a crash and are written exactly once."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
from sqlalchemy import func, select

from verbund.accounting import UsageRecord, UsageRecorder, usage_report
from verbund.store import Store, UsageRow


def rec(i: int, inst: str = "uni-a", tokens: int = 10) -> UsageRecord:
    return UsageRecord(
        request_id=f"r{i}",
        access_point="ap",
        institution_id=inst,
        key_id="key_1",
        endpoint="/v1/chat/completions",
        model="m",
        site="west",
        backend="b",
        prompt_tokens=tokens,
        completion_tokens=1,
    )


async def count(store: Store) -> int:
    async with store.session() as s:
        return int((await s.execute(select(func.count()).select_from(UsageRow))).scalar_one())


async def make_store(tmp_path: Path) -> Store:
    store = Store(f"sqlite+aiosqlite:///{tmp_path / 'u.db'}")
    await store.migrate()
    return store


async def test_records_are_flushed_in_batches(tmp_path: Path, store: Store) -> None:
    usage = UsageRecorder(store, tmp_path / "spool")
    for i in range(1200):
        usage.record(rec(i))
    assert await count(store) == 0  # nothing written on the request path
    assert await usage.flush() == 1200
    assert await count(store) == 1200
    assert not list((tmp_path / "spool").glob("*.ready"))
    await usage.aclose()


async def test_a_crash_loses_nothing_and_a_replay_duplicates_nothing(
    tmp_path: Path, store: Store
) -> None:
    spool = tmp_path / "spool"
    crashed = UsageRecorder(store, spool)
    for i in range(5):
        crashed.record(rec(i))
    crashed._rotate()
    segment = next(spool.glob("*.ready"))
    kept = segment.read_bytes()
    await crashed.flush()
    # as if the process died after the insert but before deleting the segment
    segment.write_bytes(kept)
    for i in range(5, 8):
        crashed.record(rec(i))
    # ... and with three records not yet flushed and a half-written line
    with (spool / "current.jsonl").open("ab") as f:
        f.write(b'{"id": "torn')

    restarted = UsageRecorder(store, spool)
    await restarted.flush()
    assert await count(store) == 8
    await restarted.aclose()


async def test_store_down_keeps_segments_on_disk(tmp_path: Path) -> None:
    store = Store(f"sqlite+aiosqlite:///{tmp_path / 'missing' / 'x.db'}")  # not migrated: no table
    usage = UsageRecorder(store, tmp_path / "spool")
    usage.record(rec(1))
    assert await usage.flush() == 0
    assert len(list((tmp_path / "spool").glob("*.ready"))) == 1
    await store.migrate()
    assert await usage.flush() == 1
    await usage.aclose()
    await store.aclose()


async def test_report_sums(tmp_path: Path) -> None:
    store = await make_store(tmp_path)
    usage = UsageRecorder(store, tmp_path / "spool")
    usage.record(rec(1, "uni-a", 10))
    usage.record(rec(2, "uni-a", 5))
    usage.record(rec(3, "uni-b", 7))
    await usage.flush()
    rows = await usage_report(store, ["institution"])
    assert [
        (r["institution"], r["requests"], r["prompt_tokens"], r["total_tokens"]) for r in rows
    ] == [("uni-a", 2, 15, 17), ("uni-b", 1, 7, 8)]
    await usage.aclose()
    await store.aclose()


async def test_concurrent_flushes_insert_each_record_once(tmp_path: Path) -> None:
    # the background flush and GET /admin/usage both flush; they must not race on segments
    store = await make_store(tmp_path)
    usage = UsageRecorder(store, tmp_path / "spool")
    for batch in range(4):
        for i in range(50):
            usage.record(rec(batch * 50 + i))
        usage._rotate()
    results = await asyncio.gather(*(usage.flush() for _ in range(4)))
    assert sum(results) == 200
    assert await count(store) == 200
    assert not list((tmp_path / "spool").glob("*.ready"))
    await usage.aclose()
    await store.aclose()


async def test_segments_of_an_older_version_are_inserted_with_defaults(
    tmp_path: Path, store: Store
) -> None:
    """A spool written before a column existed (here the OIP byte counts, the job seconds
    and the retry count) still goes in, next to current records, with the columns' defaults."""
    spool = tmp_path / "spool"
    spool.mkdir()
    old = {
        "id": "old-1",
        "ts": 1.0,
        "request_id": "r-old",
        "access_point": "ap",
        "institution_id": "uni-a",
        "key_id": "key_1",
        "endpoint": "/v1/chat/completions",
        "model": "m",
        "status": "ok",
        "http_status": 200,
        "latency_ms": 3.0,
        "prompt_tokens": 5,
        "retired_field": "ignored",
    }
    (spool / "00000000000000000001-1-1.ready").write_bytes(orjson.dumps(old) + b"\n")
    usage = UsageRecorder(store, spool)
    usage.record(rec(1))
    assert await usage.flush() == 2
    async with store.session() as s:
        row = (await s.execute(select(UsageRow).where(UsageRow.id == "old-1"))).scalar_one()
    assert (row.prompt_tokens, row.attempts, row.cpu_seconds, row.request_bytes) == (
        5,
        1,
        0.0,
        None,
    )
    assert await count(store) == 2
    await usage.aclose()


async def test_a_mangled_line_costs_only_itself(tmp_path: Path, store: Store) -> None:
    """A partial write (disk full) can leave half a record with the next one appended to
    it: that line is dropped, the rest of the segment still goes in."""
    spool = tmp_path / "spool"
    usage = UsageRecorder(store, spool)
    usage.record(rec(1))
    with (spool / "current.jsonl").open("ab") as f:
        f.write(b'{"id": "half", "ts": 1.0, "reque')
    usage.record(rec(2))
    usage.record(rec(3))
    assert await usage.flush() == 2
    assert await count(store) == 2
    await usage.aclose()
