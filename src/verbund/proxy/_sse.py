"""Server-sent events from a model server: forwarded as bytes, parsed only for usage.

The filter splits the upstream byte stream into events (either line ending), hands each
complete event on unchanged, and looks inside an event only when it mentions ``usage``.
When the access point itself asked the backend for usage, the usage-only final chunk is
dropped so the client sees exactly what it asked for. When the client asked for usage
(``stream_options.include_usage``) and the backend sent none (llama.cpp's server does
not), the filter writes the usage chunk itself before ``[DONE]``: the prompt as the
access point estimated it, the answer as the chunks it counted (the usage record says
``usage_estimated``).
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass

import orjson

_EVENT_END = re.compile(rb"\r?\n\r?\n")


@dataclass(slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @classmethod
    def from_body(cls, body: object) -> Usage | None:
        """Chat completions' usage, or a Response object's (Responses API, also inside
        its terminal stream events)."""
        if not isinstance(body, dict):
            return None
        if isinstance(body.get("response"), dict):
            body = body["response"]
            assert isinstance(body, dict)
        u = body.get("usage")
        if not isinstance(u, dict):
            return None
        p = u.get("prompt_tokens", u.get("input_tokens", 0))
        c = u.get("completion_tokens", u.get("output_tokens", 0))
        return cls(p if isinstance(p, int) else 0, c if isinstance(c, int) else 0)


class SSEUsageFilter:
    """Splits, filters and inspects one answer's events (across resumed segments too).

    ``collect_text`` keeps the generated text (only for backends that can resume a broken
    answer); :meth:`next_segment` prepares for the continuation from another backend,
    whose leading role-only chunk is dropped so the client sees one stream.
    """

    def __init__(
        self,
        drop_usage_chunk: bool,
        collect_text: bool = False,
        prompt_estimate: int | None = None,
    ) -> None:
        self._drop = drop_usage_chunk
        # None: never write a usage chunk of our own
        self._estimate = None if drop_usage_chunk else prompt_estimate
        self._head: dict[str, object] = {}
        self._collect = collect_text
        self._skip_role = False
        self.text: list[str] = []
        self._buf = b""
        self.usage: Usage | None = None
        self.events = 0
        self.tokens = 0  # events that carry generated text: one token each on llama.cpp
        self.done = False

    def feed(self, chunk: bytes) -> bytes:
        """Bytes to forward now: every complete event in what has arrived so far."""
        buf = self._buf + chunk if self._buf else chunk
        out: list[bytes] = []
        pos = 0
        for m in _EVENT_END.finditer(buf):
            event = buf[pos : m.end()]
            pos = m.end()
            if self._keep(event):
                out.append(self._before_done() + event if self.done else event)
        self._buf = buf[pos:]
        return b"".join(out)

    def tail(self) -> bytes:
        """An incomplete last event, if the stream ended without its blank line."""
        rest, self._buf = self._buf, b""
        if not rest.strip() or not self._keep(rest):
            return b""
        return self._before_done() + rest if self.done else rest

    def _before_done(self) -> bytes:
        """The usage chunk the backend did not send, when the client asked for one."""
        if self._estimate is None or self.usage is not None:
            return b""
        usage = {
            "prompt_tokens": self._estimate,
            "completion_tokens": self.tokens,
            "total_tokens": self._estimate + self.tokens,
        }
        self._estimate = None  # once
        return b"data: " + orjson.dumps({**self._head, "choices": [], "usage": usage}) + b"\n\n"

    def _remember_head(self, data: bytes) -> None:
        """The first chunk's id, object, created and model, for a usage chunk of our own."""
        try:
            body = orjson.loads(data)
        except orjson.JSONDecodeError:
            return
        if isinstance(body, dict):
            self._head = {k: body[k] for k in ("id", "object", "created", "model") if k in body}

    def _keep(self, event: bytes) -> bool:
        data = _data_of(event)
        if data is None:
            return True
        if data == b"[DONE]":
            self.done = True
            return True
        if event.startswith(b"event: response.") and _event_of(event) in _TERMINAL:
            # a Responses API stream ends with its terminal event, not [DONE]
            self.done = True
            with contextlib.suppress(orjson.JSONDecodeError):
                self.usage = Usage.from_body(orjson.loads(data)) or self.usage
            return True
        self.events += 1
        if self.events == 1 and self._estimate is not None:
            self._remember_head(data)
        if self._collect or self._skip_role:
            return self._inspect(data)
        if _has_text(data):
            self.tokens += 1
        if b'"usage"' not in data:
            return True
        try:
            body = orjson.loads(data)
        except orjson.JSONDecodeError:
            return True
        usage = Usage.from_body(body)
        if usage is None:
            return True
        self.usage = usage
        if isinstance(body, dict) and body.get("choices") == []:
            self.events -= 1  # the usage-only final chunk carries no tokens
            return not self._drop
        return True

    def _inspect(self, data: bytes) -> bool:
        """The slow path: parse the chunk to keep its text or drop a continuation's role."""
        try:
            body = orjson.loads(data)
        except orjson.JSONDecodeError:
            return True
        usage = Usage.from_body(body)
        if usage is not None:
            self.usage = usage
        choices = body.get("choices") if isinstance(body, dict) else None
        if not choices:
            if usage is not None:
                self.events -= 1
                return not self._drop
            return True
        delta = choices[0].get("delta") if isinstance(choices[0], dict) else None
        content = delta.get("content") if isinstance(delta, dict) else None
        if isinstance(content, str) and content:
            self.tokens += 1
            if self._collect:
                self.text.append(content)
            self._skip_role = False
            return True
        if self._skip_role and isinstance(delta, dict) and "role" in delta:
            self._skip_role = False
            return False
        return True

    @property
    def collect_text_enabled(self) -> bool:
        return self._collect

    def next_segment(self) -> None:
        """The answer continues on another backend: forget the partial event and usage."""
        self._buf = b""
        self.usage = None
        self.done = False
        self._skip_role = True


_EMPTY_TEXT = (b'"content": ""', b'"content":""', b'"text": ""', b'"text":""')


def _has_text(data: bytes) -> bool:
    """A chunk that carries generated text (a cheap test on the raw bytes)."""
    if b'"content"' not in data and b'"text"' not in data:
        return False
    return not any(e in data for e in _EMPTY_TEXT) or data.count(b'"content"') > 1


_TERMINAL = frozenset({b"response.completed", b"response.incomplete", b"response.failed"})


def _event_of(event: bytes) -> bytes:
    first = event.split(b"\n", 1)[0]
    return first[6:].strip()


def _data_of(event: bytes) -> bytes | None:
    for line in event.splitlines():
        if line.startswith(b"data:"):
            return line[5:].strip()
    return None


def error_event(message: str, code: str) -> bytes:
    body = {"error": {"message": message, "type": "server_error", "code": code, "param": None}}
    return b"data: " + orjson.dumps(body) + b"\n\n"


def stream_of_answer(body: bytes, include_usage: bool) -> bytes:
    """A complete chat completion as the chunks a streamed one would have sent, for a
    backend that could not stream this request (see :mod:`verbund.federation._dialect`)."""
    answer = orjson.loads(body)
    head = {k: answer.get(k) for k in ("id", "created", "model")}
    head["object"] = "chat.completion.chunk"
    choices = answer.get("choices") or []
    out: list[bytes] = []

    def chunk(choices: list[object], **extra: object) -> None:
        out.append(b"data: " + orjson.dumps({**head, "choices": choices, **extra}) + b"\n\n")

    for c in choices:
        i = c.get("index", 0)
        msg = c.get("message") or {}
        chunk([{"index": i, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
        if msg.get("content"):
            chunk([{"index": i, "delta": {"content": msg["content"]}, "finish_reason": None}])
        for n, call in enumerate(msg.get("tool_calls") or []):
            delta = {"tool_calls": [{"index": n, **call}]}
            chunk([{"index": i, "delta": delta, "finish_reason": None}])
        chunk([{"index": i, "delta": {}, "finish_reason": c.get("finish_reason")}])
    if include_usage and isinstance(answer.get("usage"), dict):
        chunk([], usage=answer["usage"])
    out.append(b"data: [DONE]\n\n")
    return b"".join(out)
