"""Running one batch item: read its request, send it like an interactive one, make its line.

The runner decides when and where; this module does one item and says what became of it
(an :class:`Outcome` for the store, and what the adaptive limiter should learn). Whatever
goes wrong with one item fails that item with an error line: an item left without an
outcome would stay ``running`` with its lease renewed, and its batch never finish.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import orjson

from verbund.accounting import UsageRecord
from verbund.batch._items import ClaimedItem, Outcome
from verbund.batch._limiter import Signal
from verbund.batch._objects import error_line, response_line
from verbund.batch._validate import OIP_USAGE_ENDPOINT, oip_model
from verbund.config import BatchConfig
from verbund.errors import ApiError, RateLimited, StoreError, UpstreamError
from verbund.federation import Backend
from verbund.files import FileObject, FileService

__all__ = ["Dispatch", "Execution", "Lane", "execute"]

log = logging.getLogger("verbund.batch")


class Dispatch(Protocol):
    """How batch work reaches backends: the access point's router and proxy."""

    def plan(
        self, model: str, institution_id: str, data_class: str, data_site: str | None = None
    ) -> list[Backend]:
        """Compliant backends, best first; raises ApiError like an interactive request.
        ``data_site``: the site whose agent holds the batch's input, preferred as the
        home site is for interactive requests (the data need not travel far)."""
        ...

    async def send(self, plan: list[Backend], path: str, body: bytes, record: UsageRecord) -> bytes:
        """A non-streamed request along ``plan``; the answer's body, or an ApiError.

        Raises :class:`RateLimited` before sending when the batch's institution or key
        has no tokens left in the current quota window: the item then waits."""
        ...


@dataclass(slots=True)
class Lane:
    """A running batch with work to hand out, as the runner keeps it."""

    batch_id: str
    institution_id: str
    key_id: str
    data_class: str
    endpoint: str
    model: str
    input: FileObject | None
    has_work: bool = True  # the store may have claimable items
    buffer: deque[ClaimedItem] = field(default_factory=deque)  # claimed, not started


@dataclass(frozen=True, slots=True)
class Execution:
    outcome: Outcome
    signal: Signal = Signal.neutral
    latency: float | None = None
    work: int = 1  # generated tokens: the latency is compared per token


async def execute(
    item: ClaimedItem,
    lane: Lane,
    plan: list[Backend],
    *,
    backends: Dispatch,
    files: FileService,
    config: BatchConfig,
    access_point: str,
    clock: Callable[[], float],
    on_send: Callable[[], None],
) -> Execution:
    """``on_send`` is called just before the request goes to the proxy."""
    try:
        return await _execute(
            item,
            lane,
            plan,
            backends=backends,
            files=files,
            config=config,
            access_point=access_point,
            clock=clock,
            on_send=on_send,
        )
    except Exception:  # the item's boundary: one bad item must not hang its batch
        log.exception("batch %s item %d failed", lane.batch_id, item.id)
        line = error_line(item.custom_id, "internal_error", "The request could not be processed.")
        return Execution(Outcome(item, "failed", line))


async def _execute(
    item: ClaimedItem,
    lane: Lane,
    plan: list[Backend],
    *,
    backends: Dispatch,
    files: FileService,
    config: BatchConfig,
    access_point: str,
    clock: Callable[[], float],
    on_send: Callable[[], None],
) -> Execution:
    if item.attempts > config.max_attempts:
        line = error_line(
            item.custom_id,
            "max_attempts_exceeded",
            f"The request was tried {config.max_attempts} times without an answer.",
        )
        return Execution(Outcome(item, "failed", line))
    try:
        if lane.input is None:
            raise KeyError(lane.batch_id)
        raw = await files.read_range(lane.input, item.offset, item.length)
        body = orjson.dumps(orjson.loads(raw)["body"])
    except orjson.JSONEncodeError:  # a TypeError: before the next clause
        line = error_line(
            item.custom_id, "invalid_request", "The request's body is nested too deeply to send."
        )
        return Execution(Outcome(item, "failed", line))
    except (KeyError, TypeError, StoreError, OSError, orjson.JSONDecodeError):
        line = error_line(item.custom_id, "input_unavailable", "The request could not be read.")
        return Execution(Outcome(item, "failed", line))
    record = UsageRecord(
        request_id=str(uuid.uuid4()),
        access_point=access_point,
        institution_id=lane.institution_id,
        key_id=lane.key_id,
        endpoint=OIP_USAGE_ENDPOINT if oip_model(lane.endpoint) else lane.endpoint,
        model=lane.model,
        priority="batch",
    )
    on_send()
    t0 = time.monotonic()
    try:
        answer = await backends.send(plan, lane.endpoint, body, record)
    except RateLimited as exc:
        # a token quota's window is full: batch work waits for the next one, it never fails
        wait = float(exc.headers.get("retry-after", "1"))
        return Execution(Outcome(item, "wait", next_try_at=clock() + wait))
    except ApiError as exc:
        if not isinstance(exc, UpstreamError):  # the request itself was refused: no retry
            line = response_line(item.custom_id, exc.status, record.request_id, exc.body())
            return Execution(Outcome(item, "failed", line))
        if item.attempts < config.max_attempts:
            delay = config.retry_backoff_seconds * 2 ** (item.attempts - 1)
            return Execution(Outcome(item, "retry", next_try_at=clock() + delay), Signal.overload)
        line = response_line(item.custom_id, exc.status, record.request_id, exc.body())
        return Execution(Outcome(item, "failed", line), Signal.overload)
    latency = time.monotonic() - t0
    work = max(1, record.completion_tokens)
    try:
        parsed = orjson.loads(answer)
    except orjson.JSONDecodeError:
        err = UpstreamError("The model server's answer was not JSON.")
        line = response_line(item.custom_id, err.status, record.request_id, err.body())
        return Execution(Outcome(item, "failed", line), Signal.ok, latency, work)
    done = Outcome(
        item,
        "done",
        response_line(item.custom_id, 200, record.request_id, parsed),
        prompt_tokens=record.prompt_tokens,
        completion_tokens=record.completion_tokens,
    )
    return Execution(done, Signal.ok, latency, work)
