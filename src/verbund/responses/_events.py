"""A streamed chat completion, chunk by chunk, as the Responses API's semantic events.

Each chat chunk becomes its events at once (no waiting for the whole answer): the first
text opens a message item and its content part, each text delta is an
``response.output_text.delta``, each new tool call index opens a ``function_call`` item
whose argument deltas follow. An item is closed (its ``...done`` events) when the next
begins or the answer ends. The final ``response.completed`` carries the whole output
and the usage, as OpenAI's does; a stream that broke ends with ``response.failed``.
Every event carries its ``sequence_number``.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from verbund.responses._objects import (
    Echo,
    function_call_item,
    message_item,
    new_id,
    output_text,
    response_skeleton,
    response_usage,
)

__all__ = ["EventTranslator", "sse"]


def sse(event: dict[str, Any]) -> bytes:
    kind: str = event["type"]
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"


class _Open:
    """The output item being written: a message or a function call."""

    __slots__ = ("call_id", "chat_index", "index", "item_id", "kind", "name", "parts")

    def __init__(self, kind: str, index: int, item_id: str, chat_index: int = -1) -> None:
        self.kind = kind
        self.index = index
        self.item_id = item_id
        self.chat_index = chat_index
        self.parts: list[str] = []
        self.call_id = ""
        self.name = ""


class EventTranslator:
    def __init__(self, echo: Echo, response_id: str) -> None:
        self._echo = echo
        self._seq = 0
        self._response = response_skeleton(echo, response_id)
        self._open: _Open | None = None
        self._calls: dict[int, _Open] = {}
        self.usage: dict[str, Any] | None = None
        self.finish_reason: str | None = None
        self.ended = False

    @property
    def response(self) -> dict[str, Any]:
        return self._response

    def _event(self, kind: str, **fields: Any) -> bytes:
        event = {"type": kind, "sequence_number": self._seq, **fields}
        self._seq += 1
        return sse(event)

    def start(self) -> bytes:
        snapshot = dict(self._response)
        return self._event("response.created", response=snapshot) + self._event(
            "response.in_progress", response=snapshot
        )

    def feed(self, chunk: dict[str, Any]) -> bytes:
        """The events for one chat completion chunk."""
        out: list[bytes] = []
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            self.usage = response_usage(usage)
        choices = chunk.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            return b""
        choice = choices[0]
        delta = choice.get("delta")
        if isinstance(delta, dict):
            text = delta.get("content")
            if isinstance(text, str) and text:
                out.append(self._text(text))
            calls = delta.get("tool_calls")
            if isinstance(calls, list):
                for call in calls:
                    if isinstance(call, dict):
                        out.append(self._call(call))
        reason = choice.get("finish_reason")
        if isinstance(reason, str):
            self.finish_reason = reason
        return b"".join(out)

    def _text(self, text: str) -> bytes:
        out = b""
        item = self._open
        if item is None or item.kind != "message":
            out += self._close()
            item = self._begin("message", new_id("msg"))
            out += self._event(
                "response.output_item.added",
                output_index=item.index,
                item=message_item(item.item_id, None, "in_progress"),
            )
            out += self._event(
                "response.content_part.added",
                item_id=item.item_id,
                output_index=item.index,
                content_index=0,
                part=output_text(""),
            )
        item.parts.append(text)
        return out + self._event(
            "response.output_text.delta",
            item_id=item.item_id,
            output_index=item.index,
            content_index=0,
            delta=text,
            logprobs=[],
        )

    def _call(self, call: dict[str, Any]) -> bytes:
        out = b""
        index = call.get("index", 0)
        index = index if isinstance(index, int) else 0
        found = call.get("function")
        fn: dict[str, Any] = found if isinstance(found, dict) else {}
        item = self._calls.get(index)
        if item is None:
            out += self._close()
            item = self._begin("function_call", new_id("fc"), chat_index=index)
            item.call_id = str(call.get("id") or new_id("call"))
            item.name = str(fn.get("name") or "")
            self._calls[index] = item
            out += self._event(
                "response.output_item.added",
                output_index=item.index,
                item=self._call_item(item, "in_progress", ""),
            )
        elif isinstance(fn.get("name"), str) and not item.name:
            item.name = fn["name"]
        args = fn.get("arguments")
        if isinstance(args, str) and args and item is self._open:
            item.parts.append(args)
            out += self._event(
                "response.function_call_arguments.delta",
                item_id=item.item_id,
                output_index=item.index,
                delta=args,
            )
        return out

    def _call_item(self, item: _Open, status: str, arguments: str) -> dict[str, Any]:
        return function_call_item(
            item.item_id, item.call_id, item.name, arguments, self._echo.functions, status
        )

    def _begin(self, kind: str, item_id: str, chat_index: int = -1) -> _Open:
        item = _Open(kind, len(self._response["output"]), item_id, chat_index)
        self._response["output"].append(None)  # its place; filled when it is done
        self._open = item
        return item

    def _close(self) -> bytes:
        item, self._open = self._open, None
        if item is None:
            return b""
        joined = "".join(item.parts)
        if item.kind == "message":
            part = output_text(joined)
            done = message_item(item.item_id, joined, "completed")
            self._response["output"][item.index] = done
            return (
                self._event(
                    "response.output_text.done",
                    item_id=item.item_id,
                    output_index=item.index,
                    content_index=0,
                    text=joined,
                    logprobs=[],
                )
                + self._event(
                    "response.content_part.done",
                    item_id=item.item_id,
                    output_index=item.index,
                    content_index=0,
                    part=part,
                )
                + self._event("response.output_item.done", output_index=item.index, item=done)
            )
        done = self._call_item(item, "completed", joined)
        self._response["output"][item.index] = done
        return self._event(
            "response.function_call_arguments.done",
            item_id=item.item_id,
            output_index=item.index,
            name=done["name"],
            arguments=joined,
        ) + self._event("response.output_item.done", output_index=item.index, item=done)

    def finish(self) -> bytes:
        """The answer is complete: close the open item, then ``response.completed`` (or
        ``response.incomplete`` when the token limit cut it)."""
        out = self._close()
        self.ended = True
        self._response["output"] = [i for i in self._response["output"] if i is not None]
        self._response["usage"] = self.usage
        if self.finish_reason == "length":
            self._response["status"] = "incomplete"
            self._response["incomplete_details"] = {"reason": "max_output_tokens"}
            return out + self._event("response.incomplete", response=self._response)
        self._response["status"] = "completed"
        self._response["completed_at"] = int(time.time())
        return out + self._event("response.completed", response=self._response)

    def fail(self, message: str, code: str = "server_error") -> bytes:
        """The stream broke: ``error``, then ``response.failed`` with what was written."""
        self.ended = True
        self._open = None
        self._response["output"] = [i for i in self._response["output"] if i is not None]
        self._response["status"] = "failed"
        self._response["usage"] = self.usage
        self._response["error"] = {"code": "server_error", "message": message}
        return self._event("error", code=code, message=message, param=None) + self._event(
            "response.failed", response=self._response
        )
