"""Tools, tool choice and output format of a Responses request, in chat completions' words.

Function tools pass on; a ``namespace`` tool (Codex CLI groups some functions in one) is
flattened into functions named ``<namespace>__<name>``, and the answer's calls carry the
namespace again. Built-in tools Verbund does not offer (web search, file search,
computer use, code interpreter, ...) are left out of what the model sees and reported
(the route names them in ``X-Verbund-Dropped-Tools``); a ``tool_choice`` that forces
one is a 400, since no answer could honour it. Every JSON Schema (function parameters,
``text.format.schema``) is checked against its meta-schema here, so a broken schema is
the client's 400 and not a model server's 500.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from typing import Any

import orjson
from jsonschema import Draft202012Validator, SchemaError, validators

from verbund.errors import BadRequest
from verbund.responses._objects import FunctionName

__all__ = ["ToolSet", "check_json_schema", "response_format", "translate_tools"]

_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
_SCHEMA_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_EMPTY_PARAMETERS: dict[str, Any] = {"type": "object", "properties": {}}


def _bad(message: str, param: str, code: str = "invalid_value") -> BadRequest:
    return BadRequest(message, code=code, param=param)


def check_json_schema(schema: object, param: str) -> dict[str, Any]:
    """``schema`` if it is a JSON Schema object its own meta-schema accepts; else 400."""
    if not isinstance(schema, dict):
        raise _bad(f"'{param}' must be a JSON Schema object.", param, "invalid_type")
    problem = _schema_problem(orjson.dumps(schema, option=orjson.OPT_SORT_KEYS))
    if problem is not None:
        raise _bad(f"'{param}' is not a valid JSON Schema{problem}", param, "invalid_json_schema")
    return schema


@functools.lru_cache(maxsize=1024)
def _schema_problem(raw: bytes) -> str | None:
    """What is wrong with the schema ``raw`` (None: nothing). Remembered: a meta-schema
    check costs about a millisecond, and clients send the same tools with every turn
    (Codex CLI nine, Open WebUI some 26 KB of them); a pure function of its input."""
    schema = orjson.loads(raw)
    cls = validators.validator_for(schema, default=Draft202012Validator)
    try:
        cls.check_schema(schema)
    except SchemaError as exc:
        where = "/".join(str(p) for p in exc.path)
        return (f" (at {where})" if where else "") + f": {exc.message[:200]}"
    return None


@dataclass(slots=True)
class ToolSet:
    """The chat tools, the names the client gave them, and the built-ins left out."""

    chat_tools: list[dict[str, Any]] = field(default_factory=list)
    functions: dict[str, FunctionName] = field(default_factory=dict)
    dropped: list[str] = field(default_factory=list)
    tool_choice: Any = None  # chat completions' tool_choice; None: leave it out


def _function(
    tool: dict[str, Any], param: str, namespace: str | None
) -> tuple[str, dict[str, Any]]:
    name = tool.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise _bad(
            f"'{param}.name' must be a function name (letters, digits, _ . : -).", f"{param}.name"
        )
    parameters = tool.get("parameters")
    parameters = (
        _EMPTY_PARAMETERS
        if parameters is None
        else check_json_schema(parameters, f"{param}.parameters")
    )
    description = tool.get("description")
    if description is not None and not isinstance(description, str):
        raise _bad(
            f"'{param}.description' must be a string.", f"{param}.description", "invalid_type"
        )
    chat_name = f"{namespace}__{name}" if namespace else name
    fn: dict[str, Any] = {"name": chat_name, "parameters": parameters}
    if description:
        fn["description"] = description
    if isinstance(tool.get("strict"), bool):
        fn["strict"] = tool["strict"]
    return chat_name, {"type": "function", "function": fn}


def translate_tools(tools: object, tool_choice: object) -> ToolSet:
    out = ToolSet()
    if tools is None:
        tools = []
    if not isinstance(tools, list):
        raise _bad("'tools' must be an array.", "tools", "invalid_type")
    for i, tool in enumerate(tools):
        param = f"tools[{i}]"
        if not isinstance(tool, dict) or not isinstance(tool.get("type"), str):
            raise _bad(f"'{param}' must be an object with a string 'type'.", param, "invalid_type")
        kind = tool["type"]
        if kind == "function":
            members: list[tuple[dict[str, Any], str, str | None]] = [(tool, param, None)]
        elif kind == "namespace":
            ns = tool.get("name")
            inner = tool.get("tools")
            if not isinstance(ns, str) or not _NAME.match(ns):
                raise _bad(f"'{param}.name' must be a namespace name.", f"{param}.name")
            if not isinstance(inner, list):
                raise _bad(f"'{param}.tools' must be an array.", f"{param}.tools", "invalid_type")
            members = []
            for j, t in enumerate(inner):
                if not isinstance(t, dict) or t.get("type") != "function":
                    kind_j = t.get("type") if isinstance(t, dict) else None
                    out.dropped.append(f"{ns}.{kind_j}")
                    continue
                members.append((t, f"{param}.tools[{j}]", ns))
        else:
            out.dropped.append(kind)
            continue
        for t, p, ns in members:
            chat_name, chat_tool = _function(t, p, ns)
            if chat_name in out.functions:
                raise _bad(f"The function name {chat_name!r} is given twice.", f"{p}.name")
            out.functions[chat_name] = FunctionName(t["name"], ns)
            out.chat_tools.append(chat_tool)
    out.tool_choice = _tool_choice(tool_choice, out)
    return out


def _tool_choice(choice: object, tools: ToolSet) -> Any:
    if choice is None:
        return None
    if choice in ("none", "auto", "required"):
        if choice == "required" and not tools.chat_tools:
            raise _bad("tool_choice 'required' needs at least one function tool.", "tool_choice")
        return choice if tools.chat_tools else None
    if not isinstance(choice, dict) or not isinstance(choice.get("type"), str):
        raise _bad(
            "'tool_choice' must be none, auto, required or an object with a 'type'.",
            "tool_choice",
            "invalid_type",
        )
    kind = choice["type"]
    if kind == "function":
        name, ns = choice.get("name"), choice.get("namespace")
        chat_name = f"{ns}__{name}" if isinstance(ns, str) and ns else name
        if not isinstance(chat_name, str) or chat_name not in tools.functions:
            raise _bad(
                f"tool_choice names the function {name!r}, which is not in 'tools'.",
                "tool_choice.name",
            )
        return {"type": "function", "function": {"name": chat_name}}
    if kind == "allowed_tools":
        mode, allowed = choice.get("mode"), choice.get("tools")
        if mode not in ("auto", "required") or not isinstance(allowed, list):
            raise _bad("allowed_tools needs 'mode' (auto or required) and 'tools'.", "tool_choice")
        names = {
            t.get("name") for t in allowed if isinstance(t, dict) and t.get("type") == "function"
        }
        tools.chat_tools = [
            t for t in tools.chat_tools if tools.functions[t["function"]["name"]].name in names
        ]
        if mode == "required" and not tools.chat_tools:
            raise _bad("allowed_tools allows none of the function tools.", "tool_choice.tools")
        return mode if tools.chat_tools else None
    raise _bad(
        f"tool_choice forces the tool type {kind!r}, which Verbund does not offer.",
        "tool_choice",
        "unsupported_tool",
    )


def response_format(text: object) -> dict[str, Any] | None:
    """``text.format`` as chat completions' ``response_format`` (None: plain text)."""
    if text is None:
        return None
    if not isinstance(text, dict):
        raise _bad("'text' must be an object.", "text", "invalid_type")
    fmt = text.get("format")
    if fmt is None:
        return None
    if not isinstance(fmt, dict):
        raise _bad("'text.format' must be an object.", "text.format", "invalid_type")
    kind = fmt.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind != "json_schema":
        raise _bad(
            "'text.format.type' must be text, json_object or json_schema.", "text.format.type"
        )
    name = fmt.get("name")
    if not isinstance(name, str) or not _SCHEMA_NAME.match(name):
        raise _bad(
            "'text.format.name' must be 1 to 64 letters, digits, _ or -.", "text.format.name"
        )
    spec: dict[str, Any] = {
        "name": name,
        "schema": check_json_schema(fmt.get("schema"), "text.format.schema"),
    }
    if isinstance(fmt.get("strict"), bool):
        spec["strict"] = fmt["strict"]
    if isinstance(fmt.get("description"), str):
        spec["description"] = fmt["description"]
    return {"type": "json_schema", "json_schema": spec}
