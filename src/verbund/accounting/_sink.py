"""Where usage records go: one sink, its subscribers listed, each record emitted once.

Every request that passed authentication gets exactly one :class:`UsageRecord`, whatever
became of it: answered, refused by budget, quota or policy, failed upstream, or
abandoned by its client. Routes never emit records themselves. They open
``with sink.recording(record) as rec:`` (the admission pipeline does it for them); the
proxy fills in what happened (site, tokens, status), and leaving the block emits the
record to every subscriber. If the block ends with an exception, the record's outcome
is taken from it (:func:`outcome_of`) unless the proxy already set one.

A streamed answer outlives the route's block: the proxy takes the recording over
(:meth:`Recording.hand_over`) and closes it when the stream ends. A recording that was
handed over is not emitted by the block that opened it.

What a request holds for as long as it runs (its place in the process's count, its
seats in the concurrency limits) is given back when its recording closes
(:meth:`Recording.on_close`): the one moment every outcome, streamed or not, passes
exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator, Sequence

from verbund.accounting._usage import UsageRecord
from verbund.errors import ApiError, ClientClosed, UpstreamError

__all__ = ["Recording", "UsageSink", "outcome_of"]

Subscriber = Callable[[UsageRecord], None]


def outcome_of(exc: BaseException) -> tuple[str, int]:
    """(status, HTTP status) of a request that ended with ``exc``.

    Refusals before anything was sent upstream (budget, quota, policy, unknown model)
    are ``rejected``; failures of model servers are ``error``; a client that left is
    ``cancelled`` with nginx's 499."""
    if isinstance(exc, ClientClosed | asyncio.CancelledError):
        return "cancelled", 499
    if isinstance(exc, UpstreamError):
        return "error", exc.status
    if isinstance(exc, ApiError):
        return "rejected", exc.status
    return "error", 500


class Recording:
    """One request's usage record on its way to the sink; emitted exactly once."""

    __slots__ = ("_after", "_emit", "_open", "record", "started")

    def __init__(self, record: UsageRecord, emit: Callable[[UsageRecord], None]) -> None:
        self.record = record
        self.started = time.monotonic()
        self._emit = emit
        self._open = True
        self._after: list[Callable[[], None]] = []

    def on_close(self, release: Callable[[], None]) -> None:
        """Call ``release`` when the record is emitted (what the request held)."""
        self._after.append(release)

    def close(self) -> None:
        """Emit the record and release what the request held (once; later calls do
        nothing)."""
        if self._open:
            self._open = False
            if not self.record.latency_ms:
                self.record.latency_ms = round((time.monotonic() - self.started) * 1000, 3)
            try:
                self._emit(self.record)
            finally:
                for release in self._after:
                    release()

    def hand_over(self) -> Recording:
        """A new owner (a stream that outlives the route); this one will not emit."""
        new = Recording(self.record, self._emit)
        new.started, new._open, new._after = self.started, self._open, self._after
        self._open, self._after = False, []
        return new


class UsageSink:
    """Fans each record out to its subscribers, in order.

    The access point's subscribers (``Services``): the spool that writes records to the
    store, the quota gate that settles reservations, the Prometheus metrics, the access
    log and the budget tracker."""

    def __init__(self, subscribers: Sequence[Subscriber]) -> None:
        self.subscribers = tuple(subscribers)

    def emit(self, record: UsageRecord) -> None:
        for subscriber in self.subscribers:
            subscriber(record)

    @contextlib.contextmanager
    def recording(self, record: UsageRecord) -> Iterator[Recording]:
        rec = Recording(record, self.emit)
        try:
            yield rec
        except BaseException as exc:
            if record.status == "ok" and record.http_status == 200:  # nobody said otherwise
                record.status, record.http_status = outcome_of(exc)
            raise
        finally:
            rec.close()
