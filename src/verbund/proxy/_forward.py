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

# What a backend's 4xx says goes to the operator's log only: engines put host names, paths,
# user names and connection strings into their messages, and no redaction catches all of
# them. The client gets a known engine phrase, rewritten in our words with only its numbers
# kept, or a fixed message for the status.
_KNOWN_PHRASES: tuple[tuple[re.Pattern[str], str], ...] = (
    (  # vLLM, SGLang, TGI: the context length and what was asked for
        re.compile(
            r"(?i)maximum context length is (?P<n>\d+) tokens|context length \((?P<n2>\d+) "
            r"tokens\)|must be <= (?P<n3>\d+)\b"
        ),
        "The request is longer than the model's context length ({n} tokens): shorten the "
        "messages or lower max_tokens.",
    ),
    (  # llama.cpp, others without the number
        re.compile(
            r"(?i)exceeds? (?:the )?(?:available )?context(?: size)?|context(?: size| length| "
            r"window)? (?:is )?(?:too long|exceeded)|input is too large|prompt is too long"
        ),
        "The request is longer than the model's context length: shorten the messages or "
        "lower max_tokens.",
    ),
    (  # MLServer, KServe, Triton
        re.compile(r"(?i)\bmodel\b.{0,200}\bversion\b.{0,200}\b(?:not found|does not exist)"),
        "The model server does not serve the requested model version.",
    ),
    (
        re.compile(r"(?i)\bmodel\b.{0,200}\b(?:does not exist|not found)"),
        "The model server does not serve the requested model.",
    ),
    (
        re.compile(r"(?i)chat template|does not support (?:chat|the chat)"),
        "The model cannot take chat messages; use /v1/completions.",
    ),
    (
        re.compile(r"(?i)\b(?:logprobs?|top_logprobs)\b"),
        "The model server does not accept the request's logprobs parameters.",
    ),
    (
        re.compile(r"(?i)\b(?:tools?|tool_choice|function calling)\b"),
        "The model server does not accept the request's tools or tool_choice.",
    ),
    (
        re.compile(r"(?i)\b(?:response_format|json_schema|grammar|guided)"),
        "The model server does not accept the request's response_format.",
    ),
    (
        re.compile(r"(?i)\b(?:image|multimodal|multi-modal|vision)\b"),
        "The model server does not accept the request's images.",
    ),
)
_BY_STATUS = {
    400: "The model server rejected the request as invalid.",
    404: "The model server does not know the requested model or route.",
    413: "The request is too large for the model server.",
    422: "The model server could not process the request's parameters.",
}
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"|`[^`]*`|input_value=.*?(?=, input_type|$)", re.S)
_LOGGED_CHARS = 300
_WORD = re.compile(r"[^\s'\"`,;:()\[\]{}<>]+")
_ECHO_MIN = 4  # shorter words ("the", "max") say nothing of a prompt


def upstream_message(raw: bytes) -> str:
    """The message of a backend's error body (``""`` if it has none), unfiltered."""
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
    return msg if isinstance(msg, str) else ""


def sanitize_upstream_message(raw: bytes, status: int) -> str:
    """What a client is told of a backend's 4xx: an allow-listed phrase or the status's
    fixed message, never the backend's own text."""
    msg = upstream_message(raw)[:4096]
    for pattern, phrase in _KNOWN_PHRASES:
        found = pattern.search(msg)
        if found is not None:
            numbers = [v for v in found.groupdict().values() if v is not None]
            return phrase.format(n=numbers[0]) if numbers else phrase
    return _BY_STATUS.get(status, _BY_STATUS[400])


def loggable_upstream_message(raw: bytes, sent: bytes = b"") -> str:
    """A backend's message for the operator's log, short and without what the client sent:
    quoted values (where engines echo input) go, and so does every word of the message
    that occurs in the request body ``sent``."""
    msg = _QUOTED.sub("'…'", upstream_message(raw))[:_LOGGED_CHARS]
    if not sent:
        return msg
    words = {w for w in _WORD.findall(msg) if len(w) >= _ECHO_MIN and w.encode() in sent}
    return _WORD.sub(lambda m: "…" if m.group() in words else m.group(), msg)


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
    # sent upstream besides the defaults (e.g. OIP's binary tensors: their content type
    # and Inference-Header-Content-Length)
    headers: dict[str, str] = field(default_factory=dict)
    # the body as backends of another dialect need it (by ``chat_dialect``)
    variants: dict[str, bytes] = field(default_factory=dict)

    def body_for(self, backend: Backend) -> bytes:
        if not self.variants:
            return self.body
        return self.variants.get(backend.config.chat_dialect, self.body)

    @property
    def record(self) -> UsageRecord:
        return self.recording.record


@dataclass(slots=True)
class Answer:
    """A complete upstream answer (HTTP 200) and the backend that gave it."""

    body: bytes
    backend: Backend
    # the answer's own content type and OIP's Inference-Header-Content-Length, where given
    headers: dict[str, str] = field(default_factory=dict)


# answer headers that go back to the client with the body: what describes it, and the
# processing receipt a site's agent signed for it (docs/trust.md)
PASSED_HEADERS = ("content-type", "inference-header-content-length", "x-verbund-receipt")


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
