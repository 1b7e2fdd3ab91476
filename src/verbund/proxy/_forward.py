"""What the proxy passes around: a request ready to send, a complete answer, a retry."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.types import Receive

from verbund.accounting import Recording, UsageRecord
from verbund.errors import ApiError
from verbund.federation import Backend
from verbund.proxy._sse import Usage
from verbund.routing import RouteContext

_URL = re.compile(r"(?i)\b(?:https?|unix|file)://\S+")
_HOSTPORT = re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}(?::\d+)?\b|\b[\w.-]+:\d{2,5}\b")
_PATH = re.compile(r"(?:/[\w.-]+){2,}")


def sanitize_upstream_message(raw: bytes) -> str:
    """A backend's error message without addresses, paths or excess length."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return ""
    msg: object = None
    if isinstance(body, dict):
        err = body.get("error")
        msg = err.get("message") if isinstance(err, dict) else err
        if msg is None:
            msg = body.get("detail") or body.get("message")
    if not isinstance(msg, str):
        return ""
    for pattern in (_URL, _HOSTPORT, _PATH):
        msg = pattern.sub("[redacted]", msg)
    return msg[:300]


# completes when the client has disconnected
ClientGone = Callable[[], Coroutine[Any, Any, None]]


@dataclass(slots=True)
class Forward:
    """One client request, ready to send upstream."""

    path: str
    body: bytes
    stream: bool
    plan: list[Backend]
    recording: Recording  # the proxy fills in its record; a stream takes it over
    drop_usage_chunk: bool = False
    ctx: RouteContext = field(default_factory=RouteContext)
    prompt_estimate: int = 0
    parsed: dict[str, Any] | None = None  # the body as JSON, for resuming a broken stream
    # completes when the client disconnects (None: a caller inside the access point)
    client_gone: ClientGone | None = None

    @property
    def record(self) -> UsageRecord:
        return self.recording.record


@dataclass(slots=True)
class Answer:
    """A complete upstream answer (HTTP 200) and the backend that gave it."""

    body: bytes
    backend: Backend


class Retry(Exception):
    """This try failed in a way another backend may not: the failover loop goes on."""

    def __init__(self, error: ApiError) -> None:
        super().__init__(error.message)
        self.error = error


def until_disconnect(receive: Receive) -> ClientGone:
    """Wait for the client to go away, once the request body has been read.

    After the body, the server's ``receive`` has nothing more to give until the client
    disconnects; then it returns ``http.disconnect``."""

    async def wait() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    return wait


def client_headers(backend: Backend, fwd: Forward) -> dict[str, str]:
    return {"x-verbund-site": backend.site.name, "x-request-id": fwd.record.request_id}


def fill_record(
    rec: UsageRecord,
    backend: Backend | None,
    start: float,
    *,
    status: str,
    http_status: int,
    usage: Usage | None = None,
    ttft: float | None = None,
) -> None:
    """Write what became of a request into its usage record (the recording emits it)."""
    rec.latency_ms = round((time.monotonic() - start) * 1000, 3)
    rec.status = status
    rec.http_status = http_status
    if backend is not None:
        rec.site = backend.site.name
        rec.backend = backend.name
        if status == "ok":
            backend.served += 1
        if ttft is not None:
            rec.ttft_ms = round(ttft * 1000, 3)
    if usage is not None:
        rec.prompt_tokens = usage.prompt_tokens
        rec.completion_tokens = usage.completion_tokens
