"""Run by test_python_clients_real.py in .venv-clients (the Agents SDK is not in Verbund's
venv): an agent with one function tool against the access point, once on the chat
completions model and once on the Responses model. Prints one JSON object per model."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from dataclasses import replace
from typing import Any

from agents import (
    Agent,
    AgentHooks,
    ModelSettings,
    OpenAIChatCompletionsModel,
    OpenAIResponsesModel,
    Runner,
    function_tool,
    set_tracing_disabled,
)
from agents.items import MessageOutputItem, ToolCallItem, ToolCallOutputItem
from openai import AsyncOpenAI

CODE_WORD = "PUMPERNICKEL"


class AnswerAfterTheTool(AgentHooks[Any]):
    """Once the tool has run, the next turn must answer in words (``tool_choice: none``):
    under ``auto`` a 135M model calls its tool again and again."""

    async def on_tool_end(self, context: Any, agent: Agent[Any], tool: Any, result: str) -> None:
        agent.model_settings = replace(agent.model_settings, tool_choice="none")


async def run(kind: str, client: AsyncOpenAI, model: str) -> dict[str, object]:
    calls: list[str] = []

    @function_tool
    def get_code_word(topic: str) -> str:
        """The secret code word for a topic."""
        calls.append(topic)
        return CODE_WORD

    impl = (
        OpenAIChatCompletionsModel(model=model, openai_client=client)
        if kind == "chat"
        else OpenAIResponsesModel(model=model, openai_client=client)
    )
    agent = Agent(
        name="helper",
        instructions="Call get_code_word, then reply with the code word it returned.",
        tools=[get_code_word],
        model=impl,
        # the first turn must call the tool
        model_settings=ModelSettings(tool_choice="required", temperature=0, max_tokens=48),
        reset_tool_choice=False,
        hooks=AnswerAfterTheTool(),
    )
    result = await Runner.run(agent, "What is the code word for bread?", max_turns=4)
    kinds = [
        "call" if isinstance(i, ToolCallItem)
        else "output" if isinstance(i, ToolCallOutputItem)
        else "message" if isinstance(i, MessageOutputItem)
        else type(i).__name__
        for i in result.new_items
    ]  # fmt: skip
    return {
        "kind": kind,
        "tool_calls": calls,
        "items": kinds,
        "final_output": str(result.final_output),
        "requests": len(result.raw_responses),
    }


async def main() -> None:
    url, model = sys.argv[1:3]
    key = os.environ["OPENAI_API_KEY"]
    set_tracing_disabled(True)  # traces would go to OpenAI's servers
    client = AsyncOpenAI(base_url=url, api_key=key, max_retries=1, timeout=240)
    for kind in ("chat", "responses"):
        print(json.dumps(await run(kind, client, model)), flush=True)


asyncio.run(main())
