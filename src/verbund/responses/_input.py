"""A Responses API ``input`` (text or items) as chat completions messages.

Checked item by item before anything is sent: an item type the access point does not
know, a tool output whose ``call_id`` no earlier function call carries, or a message
with a role or content part it cannot pass on is a 400 that names the item
(``input[3].call_id``). Reasoning items are accepted and left out: Verbund's backends
produce none, and clients that keep them (Codex CLI with
``include: ["reasoning.encrypted_content"]``) send back only what they got.
"""

from __future__ import annotations

from typing import Any

from verbund.errors import BadRequest
from verbund.responses._objects import FunctionName

__all__ = ["input_messages"]

_ROLES = {"user": "user", "assistant": "assistant", "system": "system", "developer": "system"}
_TEXT_PARTS = frozenset({"input_text", "output_text", "text", "summary_text", "refusal"})
_IGNORED_ITEMS = frozenset({"reasoning"})


def _bad(message: str, param: str, code: str = "invalid_value") -> BadRequest:
    return BadRequest(message, code=code, param=param)


def _text_of_part(part: object, param: str) -> str | dict[str, Any]:
    """A content part as chat text, or as a chat image part."""
    if not isinstance(part, dict):
        raise _bad(f"'{param}' must be an object with a 'type'.", param, "invalid_type")
    kind = part.get("type")
    if kind in _TEXT_PARTS:
        text = part.get("text", part.get("refusal"))
        if not isinstance(text, str):
            raise _bad(f"'{param}.text' must be a string.", f"{param}.text", "invalid_type")
        return text
    if kind == "input_image":
        url = part.get("image_url")
        if not isinstance(url, str) or not url:
            raise _bad("Only images given by 'image_url' are supported.", f"{param}.image_url")
        image: dict[str, Any] = {"url": url}
        if part.get("detail") in ("low", "high", "auto"):
            image["detail"] = part["detail"]
        return {"type": "image_url", "image_url": image}
    raise _bad(f"The content part type {kind!r} is not supported.", f"{param}.type")


def _content(content: object, param: str) -> str | list[dict[str, Any]]:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise _bad(f"'{param}' must be a string or an array.", param, "invalid_type")
    parts = [_text_of_part(p, f"{param}[{i}]") for i, p in enumerate(content)]
    if all(isinstance(p, str) for p in parts):
        return "".join(p for p in parts if isinstance(p, str))
    return [p if isinstance(p, dict) else {"type": "text", "text": p} for p in parts]


def _output_text(output: object, param: str) -> str:
    """A tool's output as the text the model reads."""
    if isinstance(output, str):
        return output
    if isinstance(output, list):
        texts = []
        for i, p in enumerate(output):
            t = _text_of_part(p, f"{param}[{i}]")
            if not isinstance(t, str):
                raise _bad("Tool outputs may hold only text.", f"{param}[{i}]")
            texts.append(t)
        return "".join(texts)
    raise _bad(f"'{param}' must be a string or an array.", param, "invalid_type")


def _string(item: dict[str, Any], key: str, param: str) -> str:
    value = item.get(key)
    if not isinstance(value, str) or not value:
        raise _bad(f"'{param}.{key}' must be a non-empty string.", f"{param}.{key}")
    return value


class _Builder:
    """Messages in order; consecutive function calls become one assistant message."""

    def __init__(self, functions: dict[str, FunctionName]) -> None:
        self.messages: list[dict[str, Any]] = []
        self.calls: set[str] = set()
        self._chat_names = {(f.namespace, f.name): chat for chat, f in functions.items()}

    def message(self, item: dict[str, Any], param: str) -> None:
        role = item.get("role")
        if role not in _ROLES:
            raise _bad(
                f"'{param}.role' must be one of user, assistant, system, developer.",
                f"{param}.role",
            )
        if "content" not in item:
            raise _bad(
                f"Missing required parameter: '{param}.content'.",
                f"{param}.content",
                "missing_required_parameter",
            )
        content = _content(item["content"], f"{param}.content")
        if role == "assistant" and isinstance(content, list):
            raise _bad("Assistant messages may hold only text.", f"{param}.content")
        self.messages.append({"role": _ROLES[role], "content": content})

    def function_call(self, item: dict[str, Any], param: str) -> None:
        call_id = _string(item, "call_id", param)
        name = _string(item, "name", param)
        arguments = item.get("arguments")
        if not isinstance(arguments, str):
            raise _bad(f"'{param}.arguments' must be a string.", f"{param}.arguments")
        namespace = item.get("namespace")
        chat_name = self._chat_names.get(
            (namespace if isinstance(namespace, str) else None, name), name
        )
        call = {
            "id": call_id,
            "type": "function",
            "function": {"name": chat_name, "arguments": arguments},
        }
        last = self.messages[-1] if self.messages else None
        if last is not None and last["role"] == "assistant" and last.get("tool_calls"):
            last["tool_calls"].append(call)
        else:
            self.messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        self.calls.add(call_id)

    def function_call_output(self, item: dict[str, Any], param: str) -> None:
        call_id = _string(item, "call_id", param)
        if call_id not in self.calls:
            raise _bad(
                f"No function call with call_id {call_id!r} precedes this output.",
                f"{param}.call_id",
            )
        if "output" not in item:
            raise _bad(
                f"Missing required parameter: '{param}.output'.",
                f"{param}.output",
                "missing_required_parameter",
            )
        text = _output_text(item["output"], f"{param}.output")
        self.messages.append({"role": "tool", "tool_call_id": call_id, "content": text})


def input_messages(
    items: object,
    functions: dict[str, FunctionName],
    max_items: int,
    history: list[dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """``input`` (preceded by a stored conversation's ``history`` items) as chat messages."""
    if isinstance(items, str):
        items = [{"type": "message", "role": "user", "content": items}]
    if not isinstance(items, list):
        raise _bad("'input' must be a string or an array of items.", "input", "invalid_type")
    if len(items) > max_items:
        raise _bad(f"'input' has more than {max_items} items.", "input", "too_many_items")
    build = _Builder(functions)
    for where, seq in (("history", history or []), ("input", items)):
        for i, item in enumerate(seq):
            param = f"{where}[{i}]"
            if not isinstance(item, dict):
                raise _bad(f"'{param}' must be an object.", param, "invalid_type")
            kind = item.get("type", "message" if "role" in item else None)
            if kind == "message":
                build.message(item, param)
            elif kind == "function_call":
                build.function_call(item, param)
            elif kind == "function_call_output":
                build.function_call_output(item, param)
            elif kind in _IGNORED_ITEMS:
                continue
            elif kind == "item_reference":
                raise _bad(
                    "Item references need stored responses; send the items themselves.",
                    f"{param}.type",
                )
            else:
                raise _bad(f"The input item type {kind!r} is not supported.", f"{param}.type")
    return build.messages
