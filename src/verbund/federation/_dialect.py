"""What a chat completions body must look like for servers that read OpenAI's API their
own way, decided per backend (``chat_dialect``) from the body the client sent.

llama-cpp-python's server (0.3.x, ``chatml-function-calling`` chat format) enforces JSON
schemas and tool calls by grammar, but:

- takes a schema as ``{"type": "json_object", "schema": ...}``; OpenAI's
  ``{"type": "json_schema", ...}`` fails its request validation with a 500;
- has no ``tool`` role in its template (a tool result would vanish from the prompt) and
  refuses an assistant message whose ``content`` is null;
- knows ``auto`` and a named function as tool choice, not ``required`` (a 500), and
  ignores the tools when no tool choice is given (OpenAI's default is ``auto``);
- cannot answer in words under ``auto``: once the model has chosen ``message:``, its
  grammar allows only a function name or the end, so the answer comes back empty or as
  ``functions.<name>:`` (Codex CLI and Open WebUI send ``auto`` with every message and
  got nothing else). An automatic choice therefore goes to it as ``none``: the model
  answers in words and calls a tool when the client forces one;
- cannot stream its ``auto`` (it fails after the headers were sent), which ``required``
  with several tools becomes, so such a request goes to it unstreamed and the access
  point streams the answer.
"""

from __future__ import annotations

from typing import Any

__all__ = ["LLAMA_CPP_PYTHON", "OPENAI", "chat_body_for", "streams_unstreamed"]

OPENAI = "openai"
LLAMA_CPP_PYTHON = "llama-cpp-python"


def chat_body_for(body: dict[str, Any], dialect: str) -> dict[str, Any] | None:
    """``body`` as ``dialect`` needs it, or None when it can go as it is."""
    if dialect != LLAMA_CPP_PYTHON:
        return None
    out = dict(body)
    changed = False
    fmt = body.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        spec = fmt.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        out["response_format"] = {"type": "json_object", "schema": schema or {}}
        changed = True
    messages = body.get("messages")
    if isinstance(messages, list):
        rewritten = _messages(messages)
        if rewritten is not None:
            out["messages"] = rewritten
            changed = True
    tools = body.get("tools")
    if tools:
        choice = body.get("tool_choice")
        if choice in (None, "auto"):
            out["tool_choice"] = "none"
            changed = True
        elif choice == "required":
            names = [_name(t) for t in tools]
            only = names[0] if len(names) == 1 else None
            out["tool_choice"] = (
                {"type": "function", "function": {"name": only}} if only else "auto"
            )
            changed = True
        if "parallel_tool_calls" in out:
            del out["parallel_tool_calls"]
            changed = True
    return out if changed else None


def streams_unstreamed(body: dict[str, Any], dialect: str) -> bool:
    """Whether a streamed ``body`` must go to a ``dialect`` backend unstreamed."""
    if dialect != LLAMA_CPP_PYTHON or body.get("stream") is not True or not body.get("tools"):
        return False
    # ``required`` with one tool becomes a forced function, which streams
    return body.get("tool_choice") == "required" and len(body["tools"]) > 1


def _name(tool: object) -> str | None:
    fn = tool.get("function") if isinstance(tool, dict) else None
    name = fn.get("name") if isinstance(fn, dict) else None
    return name if isinstance(name, str) else None


def _messages(messages: list[Any]) -> list[Any] | None:
    names: dict[str, str] = {}
    out: list[Any] = []
    changed = False
    for m in messages:
        if not isinstance(m, dict):
            out.append(m)
            continue
        role = m.get("role")
        if role == "assistant" and m.get("tool_calls"):
            for call in m["tool_calls"]:
                if isinstance(call, dict) and isinstance(call.get("id"), str):
                    names[call["id"]] = _name(call) or "function"
            if m.get("content") is None:
                m = {**m, "content": ""}
                changed = True
        elif role == "developer":
            m = {**m, "role": "system"}
            changed = True
        elif role == "tool":
            name = names.get(str(m.get("tool_call_id")), "function")
            content = m.get("content")
            text = content if isinstance(content, str) else str(content)
            m = {"role": "user", "content": f"functions.{name} returned:\n{text}"}
            changed = True
        out.append(m)
    return out if changed else None
