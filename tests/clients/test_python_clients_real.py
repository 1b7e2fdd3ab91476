"""The OpenAI Agents SDK and LangChain's ChatOpenAI against the demo federation, each in
the client venv the scripts make (.venv-clients), driven by a small script of this
folder: tools, structured output and streaming, on chat completions and the Responses
API."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from harness.demo import Demo
from tests.clients.conftest import CLIENTS_PYTHON, MODEL, installed, run_client
from tests.clients.usage import usage_rows

pytestmark = pytest.mark.real
HERE = Path(__file__).parent


def client_script(demo: Demo, script: str) -> list[dict[str, Any]]:
    """Run ``script`` in the client venv against the demo; the JSON lines it printed."""
    python = installed(CLIENTS_PYTHON)
    env = {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", "/tmp"),
        "OPENAI_AGENTS_DISABLE_TRACING": "1",
        "LANGSMITH_TRACING": "false",
        "OPENAI_API_KEY": demo.key("uni-a"),  # not on the command line: ps and reprs show it
    }
    started = time.monotonic()
    done = run_client(
        [str(python), str(HERE / script), demo.url + "/v1", MODEL],
        env, timeout=280,
    )  # fmt: skip
    print(f"{script}: {time.monotonic() - started:.1f} s\n{done.stdout}\n{done.stderr[-3000:]}")
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


@pytest.mark.timeout(600)  # the first test of a run starts the demo federation
def test_an_agents_sdk_agent_calls_its_tool_and_uses_the_result(demo: Demo) -> None:
    since = time.time() - 1
    runs = {r["kind"]: r for r in client_script(demo, "_agents_client.py")}
    assert set(runs) == {"chat", "responses"}
    for run in runs.values():
        assert run["tool_calls"], run  # the SDK ran our function
        # the call, its output sent back to the model, then the model's answer
        assert run["items"][:2] == ["call", "output"] and run["items"][-1] == "message", run
        assert run["requests"] >= 2 and run["final_output"], run
        assert "PUMPERNICKEL" in run["final_output"].upper(), run  # the tool's result, used
    endpoints = {r["endpoint"] for r in usage_rows(demo, "endpoint", since)}
    assert {"/v1/chat/completions", "/v1/responses"} <= endpoints


@pytest.mark.timeout(600)
def test_langchain_chat_openai_on_chat_completions_and_responses(demo: Demo) -> None:
    (out,) = client_script(demo, "_langchain_client.py")
    assert out["invoke"]["content"] and out["invoke"]["usage"]["input_tokens"] > 0
    stream = out["stream"]
    assert stream["chunks"] > 2 and stream["content"]
    assert stream["usage"] and stream["usage"]["output_tokens"] > 0  # include_usage honoured
    (call,) = out["bind_tools"]["tool_calls"]
    assert call["name"] == "get_weather" and isinstance(call["args"].get("city"), str)
    person = out["structured"]
    assert isinstance(person, dict) and isinstance(person["name"], str)
    assert isinstance(person["age"], int)
    assert out["responses_invoke"]["text"] and out["responses_invoke"]["usage"]
    assert out["responses_stream"]["chunks"] > 2 and out["responses_stream"]["text"]
    (rcall,) = out["responses_tools"]["tool_calls"]
    assert rcall["name"] == "get_weather" and isinstance(rcall["args"].get("city"), str)
