"""Run by test_python_clients_real.py in .venv-clients (LangChain is not in Verbund's
venv): ChatOpenAI against the access point, on chat completions and on the Responses API.
Prints one JSON object with what each call gave back."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from pydantic import BaseModel


class Person(BaseModel):
    name: str
    age: int


@tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    return "sunny"


def calls(message: Any) -> list[dict[str, Any]]:
    return [{"name": c["name"], "args": c["args"]} for c in message.tool_calls]


def main() -> None:
    url, model = sys.argv[1:3]
    key = os.environ["OPENAI_API_KEY"]
    common: dict[str, Any] = {
        "model": model, "base_url": url, "api_key": key,
        "temperature": 0, "max_tokens": 48, "max_retries": 1, "timeout": 240,
    }  # fmt: skip
    chat = ChatOpenAI(**common)
    out: dict[str, Any] = {}

    reply = chat.invoke("Say hello.")
    out["invoke"] = {"content": reply.content, "usage": reply.usage_metadata}

    chunks = list(ChatOpenAI(**common, stream_usage=True).stream("Name a colour."))
    joined = chunks[0]
    for c in chunks[1:]:
        joined = joined + c
    out["stream"] = {
        "chunks": len(chunks), "content": joined.content, "usage": joined.usage_metadata
    }  # fmt: skip

    called = chat.bind_tools([get_weather], tool_choice="get_weather").invoke(
        "What is the weather in Bonn?"
    )
    out["bind_tools"] = {"tool_calls": calls(called)}

    person = chat.with_structured_output(Person, method="json_schema").invoke(
        "Invent a person with a name and an age."
    )
    out["structured"] = person.model_dump() if isinstance(person, Person) else repr(person)

    responses = ChatOpenAI(**common, use_responses_api=True)
    r = responses.invoke("Say hello.")
    out["responses_invoke"] = {"text": r.text, "usage": r.usage_metadata}
    streamed = list(responses.stream("Name a colour."))
    out["responses_stream"] = {"chunks": len(streamed), "text": "".join(c.text for c in streamed)}
    rcalled = responses.bind_tools([get_weather], tool_choice="get_weather").invoke(
        "What is the weather in Bonn?"
    )
    out["responses_tools"] = {"tool_calls": calls(rcalled)}
    print(json.dumps(out, default=str))


main()
