"""Closed-loop chat load through an access point, recorded request by request.

Each request records when it started and ended (wall clock, so it compares with the
engines' logs), its status, the site that served it (``X-Verbund-Site``), its
``X-Request-Id``, whether streaming had begun and any error. :class:`BackendWatcher`
samples the access point's view of its backends meanwhile.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from harness.gateway import GatewayProcess
from harness.polling import poll
from harness.simengine import MODEL


@dataclass
class Result:
    index: int
    stream: bool
    start: float
    end: float = 0.0
    status: int = 0
    site: str = ""
    request_id: str = ""
    first_event: float | None = None  # wall time of the first stream event (the first byte)
    first_content: float | None = None  # wall time of the first content chunk
    error: str = ""
    done: bool = False  # a complete answer: [DONE] seen, or a 200 JSON answer with content

    @property
    def failed(self) -> bool:
        return not self.done

    @property
    def started_streaming(self) -> bool:
        """The access point had sent the first event: past the point of a plain retry."""
        return self.first_event is not None

    @property
    def latency(self) -> float:
        return self.end - self.start

    def brief(self) -> str:
        kind = "stream" if self.stream else "json"
        return (
            f"#{self.index} {kind} t={self.start:.2f}+{self.latency:.2f}s status={self.status} "
            f"site={self.site or '-'} streamed={self.started_streaming} error={self.error[:160]}"
        )


def one_request(
    client: httpx.Client,
    url: str,
    key: str,
    index: int,
    stream: bool,
    body: dict[str, Any],
) -> Result:
    """One chat completion through the access point, recorded."""
    res = Result(index=index, stream=stream, start=time.time())
    payload = {**body, "stream": stream}
    headers = {"authorization": f"Bearer {key}"}
    try:
        if stream:
            with client.stream(
                "POST", url + "/v1/chat/completions", json=payload, headers=headers
            ) as r:
                res.status = r.status_code
                res.site = r.headers.get("x-verbund-site", "")
                res.request_id = r.headers.get("x-request-id", "")
                if r.status_code != 200:
                    res.error = r.read().decode(errors="replace")[:300]
                else:
                    read_stream(r, res)
        else:
            r = client.post(url + "/v1/chat/completions", json=payload, headers=headers)
            res.status = r.status_code
            res.site = r.headers.get("x-verbund-site", "")
            res.request_id = r.headers.get("x-request-id", "")
            if r.status_code == 200:
                content = r.json()["choices"][0]["message"]["content"]
                res.done = bool(content)
                res.error = "" if content else "empty answer"
            else:
                res.error = r.text[:300]
    except httpx.HTTPError as exc:
        res.error = f"{type(exc).__name__}: {exc}"
    res.end = time.time()
    return res


def read_stream(r: httpx.Response, res: Result) -> None:
    for line in r.iter_lines():
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            res.done = True
            return
        event = json.loads(data)
        if res.first_event is None:
            res.first_event = time.time()
        if "error" in event:
            res.error = f"error event: {event['error'].get('code')}"
            return
        for choice in event.get("choices") or []:
            if (choice.get("delta") or {}).get("content") and res.first_content is None:
                res.first_content = time.time()
    res.error = res.error or "stream ended without [DONE]"


def chat_body(index: int, max_tokens: int = 16) -> dict[str, Any]:
    return {
        "model": MODEL,
        "max_tokens": max_tokens,
        "messages": [
            {"role": "system", "content": "You are a helpful assistant. " * 8},
            {"role": "user", "content": f"Question {index}: " + "Wie spät ist es? " * 10},
        ],
    }


class Load:
    """Closed-loop load: ``concurrency`` workers, requests back to back, bounded count/time.

    Even-numbered requests stream, odd ones do not. ``stop()`` ends it early.
    """

    def __init__(
        self,
        url: str,
        key: str,
        *,
        total: int,
        concurrency: int = 4,
        timeout: float = 90.0,
        body: Callable[[int], dict[str, Any]] = chat_body,
    ) -> None:
        self.url, self.key = url, key
        self.total = total
        self.concurrency = concurrency
        self.timeout = timeout
        self.body = body
        self.results: list[Result] = []
        self._next = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.started = 0.0

    def start(self) -> Load:
        self.started = time.time()
        self._threads = [
            threading.Thread(target=self._worker, daemon=True) for _ in range(self.concurrency)
        ]
        for t in self._threads:
            t.start()
        return self

    def _worker(self) -> None:
        with httpx.Client(timeout=self.timeout, trust_env=False) as client:
            while not self._stop.is_set():
                with self._lock:
                    if self._next >= self.total:
                        return
                    i = self._next
                    self._next += 1
                res = one_request(client, self.url, self.key, i, i % 2 == 0, self.body(i))
                with self._lock:
                    self.results.append(res)

    @property
    def completed(self) -> int:
        with self._lock:
            return len(self.results)

    def wait_completed(self, n: int, within: float) -> None:
        poll(lambda: self.completed >= n, f"{n} completed requests", within)

    def stop(self) -> None:
        self._stop.set()

    def join(self, within: float) -> list[Result]:
        deadline = time.monotonic() + within
        for t in self._threads:
            t.join(max(0.1, deadline - time.monotonic()))
        alive = sum(t.is_alive() for t in self._threads)
        if alive:
            raise TimeoutError(f"{alive} load workers still running after {within}s")
        return sorted(self.results, key=lambda r: r.index)


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100); nan for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def failed_before_streaming(results: Iterable[Result]) -> list[Result]:
    return [r for r in results if r.failed and not r.started_streaming]


def describe(results: Sequence[Result], limit: int = 12) -> str:
    return "\n".join(r.brief() for r in list(results)[:limit]) + (
        f"\n... and {len(results) - limit} more" if len(results) > limit else ""
    )


class BackendWatcher:
    """Samples the access point's view of its backends every ``every`` seconds.

    ``failures`` in ``/admin/sites`` grows by one for every try that failed at a backend,
    so its growth in a time window is what the access point sent to a dead backend then.
    """

    def __init__(self, gateway: GatewayProcess, every: float = 0.1) -> None:
        self.gateway = gateway
        self.every = every
        self.samples: list[tuple[float, dict[str, dict[str, Any]]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> BackendWatcher:
        self._thread.start()
        poll(lambda: bool(self.samples), "a first sample of /admin/sites", 10)
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            t = time.time()
            try:
                view = self.gateway.backends()
            except httpx.HTTPError:
                view = None
            if view is not None:
                self.samples.append((t, view))
            self._stop.wait(self.every)

    def value(self, backend: str, key: str, at: float) -> Any:
        """The last sampled value at or before ``at``."""
        before = [view for t, view in self.samples if t <= at]
        if not before:
            raise AssertionError(f"no /admin/sites sample before {at}")
        return before[-1][backend][key]

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
