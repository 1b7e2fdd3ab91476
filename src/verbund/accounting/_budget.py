"""Monthly budgets per institution: month-to-date spend kept in memory for the hot path.

Spend (tokens and money at the sites' prices) is loaded from the store at start,
refreshed every ``refresh_seconds`` so usage at other access points counts too, and
updated from every usage record this access point sees (:meth:`BudgetService.observe`).
A refresh first flushes this access point's own spool, then reads the month so far of
the institutions that have a budget (none: no query at all); records observed while it
runs are added on top (one that the usage flusher writes in that same moment counts
twice until the next refresh: an error on the safe side).

:meth:`BudgetService.check` answers in memory: headers that tell the client how much of
the budget is used, a warning from :data:`WARN_AT`, and :class:`BudgetExceeded` at 100 %
when the institution asked for a hard stop. Months are UTC calendar months.

Training jobs spend long after they are admitted, so they are admitted against what
they ask for: ``check(..., planned=cost)`` refuses a job whose requested resources, at
the dearest site's compute prices, would pass a hard stop, and :meth:`hold` keeps that
cost counted as spent until the job's own usage record arrives (then the hold is
replaced by what the job really used) or the hold expires (a job that never ran).
Holds live in this access point's memory: a restart forgets them, and the job's usage
record still counts in full when it comes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal

from verbund.accounting._lines import load_lines
from verbund.accounting._period import iso_utc, month_of, parse_month
from verbund.accounting._prices import BILLABLE, ZERO, PriceBook
from verbund.accounting._usage import UsageRecord
from verbund.config import InstitutionConfig
from verbund.errors import BudgetExceeded
from verbund.store import STORE_FAILURES, Store

log = logging.getLogger("verbund.budget")

USED_HEADER = "x-verbund-budget-used"
WARNING_HEADER = "x-verbund-budget-warning"
WARN_AT = 0.8
MAX_RECENT = 100_000


@dataclass(slots=True)
class Spend:
    tokens: int = 0
    cost: Decimal = ZERO


class BudgetService:
    def __init__(
        self,
        store: Store,
        prices: PriceBook,
        *,
        flush: Callable[[], Awaitable[object]] | None = None,
        budgeted: Callable[[], Iterable[InstitutionConfig]] | None = None,
        refresh_seconds: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._prices = prices
        self._flush = flush
        self._budgeted = budgeted  # None: load every institution
        self._refresh = refresh_seconds
        self._clock = clock
        self._spend: dict[str, Spend] = {}
        self._seq = 0
        # (seq, institution, tokens, cost) observed since the last load began
        self._recent: deque[tuple[int, str, int, Decimal]] = deque(maxlen=MAX_RECENT)
        self._month, self._month_start, self._month_end = "", 0.0, 0.0
        # job id -> (institution, cost, expires at): admitted jobs that have not reported
        self._holds: dict[str, tuple[str, Decimal, float]] = {}
        self._roll(clock())

    def _roll(self, now: float) -> None:
        if self._month_start <= now < self._month_end:
            return
        self._month = month_of(now)
        self._month_start, self._month_end = parse_month(self._month)
        self._spend = {}
        self._recent.clear()

    def spend(self, institution_id: str) -> Spend:
        self._roll(self._clock())
        return self._spend.get(institution_id) or Spend()

    def _add(self, institution_id: str, tokens: int, cost: Decimal) -> None:
        s = self._spend.get(institution_id)
        if s is None:
            s = self._spend[institution_id] = Spend()
        s.tokens += tokens
        s.cost += cost

    def job_cost(self, *, cpus: int, gpus: int, minutes: int) -> Decimal:
        """What a job's requested resources may cost at the dearest site's prices."""
        seconds = minutes * 60.0
        return self._prices.compute_ceiling(cpu_seconds=cpus * seconds, gpu_seconds=gpus * seconds)

    def hold(self, job_id: str, institution_id: str, cost: Decimal, seconds: float) -> None:
        """Count ``cost`` as spent until the job's usage record arrives, or ``seconds``."""
        if cost > 0:
            self._holds[job_id] = (institution_id, cost, self._clock() + seconds)

    def held(self, institution_id: str) -> Decimal:
        """Cost held for admitted jobs of the institution that have not reported yet."""
        if not self._holds:
            return ZERO
        now = self._clock()
        for job_id, (_, _, until) in list(self._holds.items()):
            if until <= now:
                del self._holds[job_id]
        return sum((cost for inst, cost, _ in self._holds.values() if inst == institution_id), ZERO)

    def observe(self, rec: UsageRecord) -> None:
        """Count one usage record of this access point (a subscriber of the usage sink)."""
        self._roll(self._clock())
        self._holds.pop(rec.request_id, None)  # a job reported: its real use replaces the hold
        if rec.status not in BILLABLE or not rec.site:
            return
        if not self._month_start <= rec.ts < self._month_end:
            return
        cost = self._prices.cost(
            rec.site,
            rec.model,
            requests=1,
            prompt_tokens=rec.prompt_tokens,
            completion_tokens=rec.completion_tokens,
            gpu_seconds=rec.gpu_seconds,
            cpu_seconds=rec.cpu_seconds,
        )
        tokens = rec.prompt_tokens + rec.completion_tokens
        self._seq += 1
        # bounded: if the store has been away for long, the oldest are forgotten
        self._recent.append((self._seq, rec.institution_id, tokens, cost))
        self._add(rec.institution_id, tokens, cost)

    async def load(self) -> None:
        """Month-to-date spend from the store, plus what was observed meanwhile."""
        now = self._clock()
        self._roll(now)
        month, mark = self._month, self._seq
        start, end = self._month_start, self._month_end
        ids: set[str] | None = None
        if self._budgeted is not None:
            ids = {
                i.id for i in self._budgeted() if i.budget_tokens_per_month or i.budget_per_month
            }
        if ids is None or ids:
            if self._flush is not None:
                await self._flush()
            lines = await load_lines(self._store, start, end, ids)
        else:
            lines = []
        if month != self._month:  # the month turned while we read
            return
        self._spend = {}
        for ln in lines:
            cost = self._prices.cost(
                ln.site,
                ln.model,
                requests=ln.requests,
                prompt_tokens=ln.prompt_tokens,
                completion_tokens=ln.completion_tokens,
            )
            self._add(ln.institution, ln.prompt_tokens + ln.completion_tokens, cost)
        while self._recent and self._recent[0][0] <= mark:
            self._recent.popleft()
        for _, inst, tokens, cost in self._recent:
            self._add(inst, tokens, cost)

    def used(self, inst: InstitutionConfig, planned: Decimal = ZERO) -> float | None:
        """Fraction of the budget used (the larger of tokens and money), None without one;
        held job costs and ``planned`` count as money spent."""
        if not (inst.budget_tokens_per_month or inst.budget_per_month):
            return None
        s = self.spend(inst.id)
        fractions = []
        if inst.budget_tokens_per_month:
            fractions.append(s.tokens / inst.budget_tokens_per_month)
        if inst.budget_per_month:
            cost = s.cost + self.held(inst.id) + planned
            fractions.append(float(cost / inst.budget_per_month))
        return max(fractions)

    def check(self, institution: InstitutionConfig, planned: Decimal = ZERO) -> dict[str, str]:
        """Response headers about the budget; raises BudgetExceeded at 100 % with a hard stop.

        ``planned``: the cost of what is being admitted (a training job's requested
        resources); it is refused if that cost would pass a hard stop."""
        used = self.used(institution)
        if used is None:
            return {}
        headers = {USED_HEADER: f"{used:.2f}"}
        if planned and institution.budget_hard_stop:
            after = self.used(institution, planned)
            if after is not None and after > 1.0:
                raise BudgetExceeded(
                    f"Institution '{institution.id}' cannot start this job: its requested "
                    f"resources may cost {planned:.2f} {self._prices.currency}, more than is "
                    f"left of its monthly budget ({self._describe(institution)}).",
                    headers=headers,
                )
        if used >= 1.0:
            headers[WARNING_HEADER] = f"monthly budget used up ({used:.0%})"
            if institution.budget_hard_stop:
                raise BudgetExceeded(
                    f"Institution '{institution.id}' has used up its monthly budget "
                    f"({self._describe(institution)}); it renews on "
                    f"{iso_utc(self._month_end)[:10]} (UTC).",
                    headers=headers,
                )
        elif used >= WARN_AT:
            headers[WARNING_HEADER] = f"{used:.0%} of the monthly budget used"
        return headers

    def _describe(self, inst: InstitutionConfig) -> str:
        s = self.spend(inst.id)
        parts = []
        if inst.budget_tokens_per_month:
            parts.append(f"{s.tokens} of {inst.budget_tokens_per_month} tokens")
        if inst.budget_per_month:
            parts.append(f"{s.cost:.2f} of {inst.budget_per_month:.2f} {self._prices.currency}")
            held = self.held(inst.id)
            if held:
                parts.append(f"{held:.2f} held for jobs not finished")
        return ", ".join(parts)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._refresh)
            try:
                await self.load()
            except STORE_FAILURES as exc:
                log.warning("budget refresh from the store failed: %s", type(exc).__name__)
