"""Batch items are charged against the institution's token quota as they run, and wait for
the next window instead of failing when one is full."""

from __future__ import annotations

import time
from pathlib import Path

from sqlalchemy import select

from tests.batch.helpers import chat_line, start_batch
from tests.conftest import Gateway, GatewayFactory, federation_dict
from verbund.config import parse_config
from verbund.coordination import Limit, LocalLimiter
from verbund.store import UsageRow

TOKENS_PER_MINUTE = 60


async def item_rows(gw: Gateway) -> list[UsageRow]:
    await gw.services.accounting.spool.flush()
    async with gw.services.store.session() as s:
        q = select(UsageRow).where(UsageRow.endpoint == "/v1/chat/completions")
        return list((await s.execute(q)).scalars())


async def test_a_batch_crossing_a_minute_quota_waits_and_completes(
    gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    # one attempt per item: an item whose quota wait counted as an attempt would fail
    data = federation_dict(tmp_path, batch={"retry_backoff_seconds": 0, "max_attempts": 1})
    data["institutions"][0]["tokens_per_minute"] = TOKENS_PER_MINUTE
    async with gateway_factory(parse_config(data)) as gw:
        # the quota's minute ends three seconds from now (the runner waits in real time)
        offset = 57 - time.time() % 60
        limiter = LocalLimiter(clock=lambda: time.time() + offset)
        gw.services.coordination.quotas.limiter = limiter
        first_minute = time.time() + offset
        lines = [chat_line(f"r{i}") for i in range(10)]
        for line in lines:
            line["body"]["max_tokens"] = 4
        batch = await start_batch(gw, lines)
        await gw.services.batch_runner.run_until_idle(30)

        done = (await gw.client.get(f"/v1/batches/{batch['id']}", headers=gw.auth())).json()
        assert done["status"] == "completed", done
        assert done["request_counts"] == {"total": 10, "completed": 10, "failed": 0}
        rows = await item_rows(gw)
        used = sum(r.prompt_tokens + r.completion_tokens for r in rows)
        assert len(rows) == 10 and used > TOKENS_PER_MINUTE  # more than one minute's worth
        # the tokens are in the institution's counters: part in each minute
        tpm = Limit("institution:uni-a", "tpm", TOKENS_PER_MINUTE)
        first = limiter.counted(tpm, first_minute)
        second = limiter.counted(tpm, first_minute + 60)
        assert first > 0 and second > 0
        assert first + second == used
