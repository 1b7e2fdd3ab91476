"""Admission: the one gate every request that spends capacity passes.

For chat, completions, embeddings, OIP inference (site models and ``ft:`` models),
batch creation and training-job creation alike, in two steps.

Before the body is read (:meth:`Admitter.enter`), so that a slow or huge upload cannot
hold capacity it was never entitled to:

1. a usage record is opened (:meth:`UsageSink.recording`): from here on, whatever
   happens, the request leaves exactly one record;
2. its place in this process's count (:class:`Overload`: fair shedding by institution);
3. requests per minute of the institution and the key (429 ``rate_limit_exceeded``);
4. a seat in the key's and the institution's concurrency limits (429
   ``concurrency_limit_exceeded``), held until the answer has ended.

Once the body is known (:meth:`Entry.admit`):

5. the budget: an institution at its hard stop is refused (429 ``insufficient_quota``),
   a training job also when its requested resources would pass the stop;
6. token quotas (per minute, per month) reserve the expected tokens up front, settled
   from the usage record when the answer is in;
7. the route plan: compliant backends, best first (403 when policy excludes every
   site, 404 for an unknown model, 503 when none can serve now) — only for requests
   the proxy will send somewhere.

The budget comes before token quotas so that a refusal reserves no tokens. What a route
gets back is one :class:`Admission`; it hands that to the proxy
(:meth:`Admission.forward`) and adds its headers to the answer (:meth:`Admission.respond`).
Everything held (the process count, the seats) is given back when the record is emitted.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

from starlette.responses import Response

from verbund.accounting import BudgetService, Recording, UsageRecord, UsageSink, outcome_of
from verbund.admission._shedding import Overload
from verbund.config import DataClass, LimitsConfig
from verbund.coordination import QuotaGate, Seats
from verbund.errors import ApiError, ModelNotFound, NoBackendAvailable
from verbund.federation import Backend, Federation
from verbund.policy import RequestPolicy
from verbund.proxy import ClientGone, Forward
from verbund.routing import RouteContext, Router
from verbund.telemetry import Pseudonymizer
from verbund.telemetry._tracing import Tracer, span
from verbund.tenancy import Principal, request_limits, seat_limits, token_limits

__all__ = ["Admission", "Admitter", "Ask", "Entry", "receipt_plan"]


def receipt_plan(model: str, plan: list[Backend]) -> list[Backend]:
    """The plan's backends whose site can sign a processing receipt for what it serves
    (its agent relays the request and has a signing key this access point takes). A
    request that needs a receipt never goes anywhere else: with none, it fails closed."""
    signing = [b for b in plan if b.site.signs_receipts]
    if not signing:
        sites = sorted({b.site.name for b in plan})
        raise NoBackendAvailable(
            f"A processing receipt is required (X-Verbund-Receipt: required, or the "
            f"institution's require_receipts), but no compliant site available for model "
            f"'{model}' can sign one ({', '.join(sites) or 'none'}: a site signs only when "
            f"its agent relays its inference and has a signing key).",
            code="receipt_unavailable",
        )
    return signing


@dataclass(frozen=True, slots=True)
class Ask:
    """What a request asks for, as admission needs to know it."""

    model: str  # the public model name asked for; resolved by the route if not routed
    data_class: DataClass
    tokens: int = 0  # reserved against token quotas until the usage record settles it
    route: RouteContext | None = None  # None: nothing for the router (batches, jobs, ft:)
    stream: bool = False
    priority: str = "interactive"
    cost: Decimal = Decimal(0)  # what a training job's requested resources may cost
    user: str = ""  # the OpenAI ``user`` field, kept only as a keyed hash
    request_bytes: int | None = None


@dataclass(slots=True)
class Admission:
    """An admitted request: its recording, its route plan, the headers for its answer."""

    recording: Recording
    plan: list[Backend]
    ctx: RouteContext
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def record(self) -> UsageRecord:
        return self.recording.record

    def forward(
        self,
        path: str,
        body: bytes,
        *,
        stream: bool = False,
        drop_usage_chunk: bool = False,
        prompt_estimate: int = 0,
        parsed: dict[str, Any] | None = None,
        client_gone: ClientGone | None = None,
        variants: dict[str, bytes] | None = None,
    ) -> Forward:
        """The request as the proxy takes it."""
        return Forward(
            path=path,
            body=body,
            stream=stream,
            plan=self.plan,
            recording=self.recording,
            drop_usage_chunk=drop_usage_chunk,
            ctx=self.ctx,
            prompt_estimate=prompt_estimate,
            parsed=parsed,
            client_gone=client_gone,
            variants=variants or {},
        )

    def respond(self, response: Response) -> Response:
        """The answer with the quota and budget headers of this admission."""
        response.headers.update(self.headers)
        return response


class Entry:
    """A request past its first step (caller known, seats taken), its body not yet read."""

    __slots__ = ("_admitter", "headers", "person", "recording", "who")

    def __init__(
        self,
        admitter: Admitter,
        who: Principal,
        recording: Recording,
        headers: dict[str, str],
        person: str = "",
    ) -> None:
        self._admitter = admitter
        self.who = who
        self.recording = recording
        self.headers = headers  # the request quota's, for the answer
        self.person = person  # a front-end user's pseudonym, or ""

    @property
    def record(self) -> UsageRecord:
        return self.recording.record

    async def admit(self, ask: Ask) -> Admission:
        """Budget, token quotas and route plan for what the body asks; or the refusal."""
        return await self._admitter.admit(self, ask)

    def detach(self) -> Entry:
        """This request, now owned by an answer that outlives the route (a stream that
        waits for its model to start): the route's end no longer emits its record; the
        new owner does, in :meth:`owned`."""
        return Entry(
            self._admitter, self.who, self.recording.hand_over(), self.headers, self.person
        )

    @contextlib.contextmanager
    def owned(self) -> Iterator[Entry]:
        """Emit the record when the block ends (unless a stream took it over), with the
        outcome of the error that ended it."""
        try:
            yield self
        except BaseException as exc:
            record = self.record
            if record.status == "ok" and record.http_status == 200:
                record.status, record.http_status = outcome_of(exc)
            raise
        finally:
            self.recording.close()


class Admitter:
    def __init__(
        self,
        *,
        access_point: str,
        federation: Federation,
        router: Router,
        budgets: BudgetService,
        quotas: QuotaGate,
        seats: Seats,
        overload: Overload,
        limits: LimitsConfig,
        usage: UsageSink,
        pseudonyms: Pseudonymizer,
        tracer: Tracer,
    ) -> None:
        self._access_point = access_point
        self._federation = federation
        self._router = router
        self._budgets = budgets
        self._quotas = quotas
        self._seats = seats
        self._overload = overload
        self._limits = limits
        self._usage = usage
        self._pseudonyms = pseudonyms
        self._tracer = tracer

    @contextlib.asynccontextmanager
    async def enter(
        self, who: Principal, endpoint: str, request_id: str, person: str = ""
    ) -> AsyncIterator[Entry]:
        """The steps before the body; the record is emitted, and what the request holds
        given back, when the answer has ended (a stream hands this over to the proxy).

        ``person`` names the person behind a front-end's key (from the user headers it
        forwards, trusted for such keys only): it is kept as a keyed hash, which the
        person's own quotas count and the usage record carries, and it becomes the
        request's end user as sites see it."""
        inst = who.institution
        record = UsageRecord(
            request_id=request_id,
            access_point=self._access_point,
            institution_id=inst.id,
            key_id=who.key_id,
            endpoint=endpoint,
            model="",
            person_id=who.key.person_id,
        )
        # a front-end's user, unless the key is a person's own (then it is theirs)
        front = self._pseudonyms(person) if person and not who.key.person_id else ""
        if front:
            record.person_id = record.user_hash = front
        with self._usage.recording(record) as recording:
            try:
                recording.on_close(self._overload.claim(inst.id).release)
                charged = await self._quotas.charge(
                    request_limits(inst, who.key, who.person, front)
                )
                taken = await self._seats.take(seat_limits(inst, who.key, self._limits))
                recording.on_close(taken.release)
            except ApiError as exc:  # refused before anything was sent anywhere
                record.status, record.http_status = "rejected", exc.status
                raise
            yield Entry(self, who, recording, charged.headers, front)

    async def admit(self, entry: Entry, ask: Ask) -> Admission:
        who, record = entry.who, entry.record
        inst = who.institution
        record.model = self._stored_name(ask)
        record.stream, record.priority = ask.stream, ask.priority
        record.request_bytes = ask.request_bytes
        if ask.user and not entry.person:
            record.user_hash = self._pseudonyms(ask.user)
        try:
            headers = self._budgets.check(inst, ask.cost)
            reservation = await self._quotas.admit(
                record.request_id,
                token_limits(inst, who.key, who.person, entry.person),
                ask.tokens,
            )
            if not self._federation.visible(ask.model, inst.id):
                record.model = "unknown"  # another institution's model: not even its name
                raise ModelNotFound(f"The model '{ask.model}' does not exist.", param="model")
            policy = RequestPolicy.for_institution(inst, ask.data_class)
            ctx = replace(ask.route or RouteContext(), data_class=ask.data_class.value)
            plan: list[Backend] = []
            if ask.route is not None:
                with span(self._tracer, "verbund.route", {"verbund.model": record.model}):
                    plan = self._router.plan(ask.model, policy, ctx)
                if ctx.receipt:
                    plan = receipt_plan(ask.model, plan)
        except ApiError as exc:  # refused before anything was sent anywhere
            record.status, record.http_status = "rejected", exc.status
            raise
        headers = {**entry.headers, **reservation.headers, **headers}
        return Admission(entry.recording, plan, ctx, headers)

    def _stored_name(self, ask: Ask) -> str:
        """A name the federation does not know is client text: never store it. Asks that
        are not routed carry names their route has already resolved (a recipe, an
        ``ft:`` model of the institution)."""
        if ask.route is None or ask.model in self._federation.models:
            return ask.model
        return "unknown"
