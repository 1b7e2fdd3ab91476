"""What the site's relay served, metered by the site itself, and the monthly statement
the site signs from it (docs/trust.md, "Countersigned usage").

Settlement otherwise rests on the access points' records alone. The agent sees every
request it relays: the institution (the access point names it in a header), the model,
and the usage the backend reported in its answer (the final usage chunk of a stream).
It keeps one record per request in its own store — the same usage table and the same
billable sum (:func:`verbund.accounting.load_lines`) as an access point, so both count
alike — and signs a month's totals per institution and model with the site's key. No
text of a request or answer is kept, and no key: only counts under an institution.

Node time goes into the same statement: each training job that ended here in the month
(as the access points bill it: one request, its CPU and GPU seconds, unless it failed)
under its institution and model, and the CPU and GPU seconds of on-demand instances
stopped in the month (from the agent's own audit entries) under the model, with
institution ``""``: an instance serves every institution.

Records are written in batches (every ``FLUSH_SECONDS``, before a statement is signed,
and when the agent stops), so metering adds no store write to a request's answer; an
agent killed outright loses at most the last second's records.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections import defaultdict
from collections.abc import Collection
from dataclasses import dataclass

from sqlalchemy import select

from verbund.accounting import load_lines, parse_month
from verbund.errors import BadRequest
from verbund.proxy import Usage
from verbund.store import STORE_FAILURES, AuditRow, Store, TrainingJobRow, UsageRow
from verbund.trust import ENGINE, SigningKey, UsageStatement, sign_statement

__all__ = ["Meter", "Metered"]

log = logging.getLogger("verbund.agent")

FLUSH_SECONDS = 1.0
Line = dict[str, int | str | float | bool]  # one line of a usage statement
ENGINE_ENDPOINT = "engine-counters"  # the records of engines' own counters (not requests)
MAX_PENDING = 100_000  # a store away for long: the oldest records are dropped, and logged


@dataclass(frozen=True, slots=True)
class Metered:
    """One relayed request as the site counts it."""

    request_id: str
    access_point: str
    institution: str
    endpoint: str
    model: str
    backend: str
    usage: Usage | None
    stream: bool
    complete: bool  # the answer ended as the backend meant it to (a stream's [DONE])


class Meter:
    def __init__(self, store: Store, site: str) -> None:
        self._store = store
        self._site = site
        self._pending: list[UsageRow] = []
        self._lock = asyncio.Lock()

    def record(self, m: Metered) -> None:
        """Count one relayed request (written with the next flush)."""
        usage = m.usage or Usage()
        if len(self._pending) >= MAX_PENDING:
            del self._pending[0]
            log.error("metering: the store is away; a usage record was dropped")
        self._pending.append(
            UsageRow(
                id=uuid.uuid4().hex,
                ts=time.time(),
                request_id=m.request_id[:64],
                access_point=m.access_point,
                institution_id=m.institution[:128],
                key_id="",
                endpoint=m.endpoint[:64],
                model=m.model[:128],
                site=self._site,
                backend=m.backend,
                prompt_tokens=usage.prompt_tokens,
                completion_tokens=usage.completion_tokens,
                status="ok" if m.complete else "incomplete",
                http_status=200,
                latency_ms=0.0,
                stream=m.stream,
                usage_estimated=m.usage is None,
            )
        )

    def record_engine(self, model: str, backend: str, prompt: int, completion: int) -> None:
        """Count what an engine's own token counters grew by (``verbund.agent._counters``),
        under institution ``ENGINE``: written with the next flush."""
        self._pending.append(
            UsageRow(
                id=uuid.uuid4().hex,
                ts=time.time(),
                request_id="",
                access_point="",
                institution_id=ENGINE,
                key_id="",
                endpoint=ENGINE_ENDPOINT,
                model=model[:128],
                site=self._site,
                backend=backend[:128],
                prompt_tokens=prompt,
                completion_tokens=completion,
                status="ok",
                http_status=200,
                latency_ms=0.0,
            )
        )

    async def flush(self) -> None:
        """Write what was counted since the last flush (kept for the next on failure)."""
        async with self._lock:
            rows, self._pending = self._pending, []
            if not rows:
                return
            try:
                async with self._store.session() as s, s.begin():
                    s.add_all(rows)
            except STORE_FAILURES as exc:
                self._pending[:0] = [_copy(r) for r in rows]
                log.warning("metering: %d records not written yet: %s", len(rows), exc)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_SECONDS)
            await self.flush()

    async def lines(
        self, month: str, metered: Collection[str] = (), unmetered: Collection[str] = ()
    ) -> list[Line]:
        """The month's billable totals per institution and model, with node time; the
        engines' own counts per model (institution ``ENGINE``: every model whose engines
        are ``metered``, and any they counted this month), and models whose engines have
        no counters (``unmetered``) flagged so."""
        try:
            since, until = parse_month(month)
        except ValueError:
            raise BadRequest("'month' must be YYYY-MM.", param="month") from None
        await self.flush()
        sums: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0, 0, 0, 0.0, 0.0])
        engine: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        for ln in await load_lines(self._store, since, until):
            if ln.site != self._site:
                continue
            if ln.endpoint == ENGINE_ENDPOINT:
                engine[ln.model][0] += ln.prompt_tokens
                engine[ln.model][1] += ln.completion_tokens
                continue
            acc = sums[(ln.institution, ln.model)]
            acc[0] += ln.requests
            acc[1] += ln.prompt_tokens
            acc[2] += ln.completion_tokens
        async with self._store.session() as s:
            jobs = (
                await s.execute(
                    select(TrainingJobRow).where(
                        TrainingJobRow.finished_at >= since,
                        TrainingJobRow.finished_at < until,
                        TrainingJobRow.status != "failed",
                    )
                )
            ).scalars()
            for job in jobs:
                acc = sums[(job.institution_id, job.fine_tuned_model or job.model)]
                acc[0] += 1
                acc[3] += job.cpu_seconds
                acc[4] += job.gpu_seconds
            stops = (
                await s.execute(
                    select(AuditRow.after).where(
                        AuditRow.action == "on_demand.stop",
                        AuditRow.ts >= since,
                        AuditRow.ts < until,
                    )
                )
            ).scalars()
            for after in stops:
                held = json.loads(after or "null") or {}
                acc = sums[("", str(held.get("model", "")))]
                acc[3] += float(held.get("cpu_seconds") or 0.0)
                acc[4] += float(held.get("gpu_seconds") or 0.0)
        out: list[Line] = []
        for model in sorted({*engine, *metered} - set(unmetered)):
            out.append(_line(ENGINE, model, 0, *engine[model]))
        for model in sorted(set(unmetered)):
            out.append(_line(ENGINE, model, 0, 0, 0) | {"unmetered": True})
        for (inst, model), (n, p, c, cpu, gpu) in sorted(sums.items()):
            line = _line(inst, model, int(n), int(p), int(c))
            out.append(line | {"cpu_seconds": round(cpu, 3), "gpu_seconds": round(gpu, 3)})
        return out

    async def statement(
        self,
        key: SigningKey,
        month: str,
        metered: Collection[str] = (),
        unmetered: Collection[str] = (),
    ) -> UsageStatement:
        lines = await self.lines(month, metered, unmetered)
        return sign_statement(key, month, lines, time.time())


def _line(inst: str, model: str, requests: int, prompt: int, completion: int) -> Line:
    return {
        "institution": inst,
        "model": model,
        "requests": requests,
        "prompt_tokens": prompt,
        "completion_tokens": completion,
    }


def _copy(row: UsageRow) -> UsageRow:
    """A fresh row with ``row``'s values (a failed session may have touched the old)."""
    return UsageRow(**{c.key: getattr(row, c.key) for c in UsageRow.__table__.columns})
