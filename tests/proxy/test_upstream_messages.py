"""What a client hears of a backend's 4xx: known engine phrases or a fixed message, never
the backend's own text; the operator's log has that text, without the client's input."""

from __future__ import annotations

import logging

import orjson
import pytest

from tests.conftest import Gateway
from verbund.proxy._forward import loggable_upstream_message, sanitize_upstream_message

LEAKY = [
    "Model weights at /srv/models/llama on gpu-node-17.rz-west.internal could not be read",
    "ssh deploy@gpu-node-17 failed; db password=hunter2 rejected",
    "Invalid request for worker rank 3 on node a100-07",
    "postgresql://verbund:s3cret@db.rz-west.internal/engine refused the connection",
    'Traceback (most recent call last): File "/opt/vllm/entrypoints/serving.py"',
]
SECRETS = ("gpu-node-17", "rz-west", "/srv", "deploy@", "hunter2", "a100-07", "s3cret", "/opt")


def body(message: str) -> bytes:
    return orjson.dumps({"error": {"message": message, "type": "BadRequestError"}})


@pytest.mark.parametrize("message", LEAKY)
@pytest.mark.parametrize("status", [400, 404, 413, 422, 418])
def test_unknown_messages_become_the_statuses_fixed_message(message: str, status: int) -> None:
    told = sanitize_upstream_message(body(message), status)
    assert not any(s in told for s in SECRETS)
    assert told.startswith("The model server") or told.startswith("The request")


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (  # vLLM
            "This model's maximum context length is 4096 tokens. However, you requested 5000 "
            "tokens (4000 in the messages, 1000 in the completion). Please reduce the length.",
            "context length (4096 tokens)",
        ),
        (  # SGLang
            "The input (9000 tokens) is longer than the model's context length (8192 tokens).",
            "context length (8192 tokens)",
        ),
        (  # TGI
            "Input validation error: `inputs` tokens + `max_new_tokens` must be <= 2048. Given: "
            "2000 `inputs` tokens and 100 `max_new_tokens`",
            "context length (2048 tokens)",
        ),
        (  # llama.cpp
            "the request exceeds the available context size, try increasing it",
            "longer than the model's context length",
        ),
        ("The model `smol-on-gpu-node-17` does not exist.", "does not serve the requested model"),
        (  # MLServer
            "Model digits-gpu-node-17 with version v9 not found",
            "does not serve the requested model version",
        ),
    ],
)
def test_known_engine_phrases_are_told_in_our_words(message: str, expected: str) -> None:
    told = sanitize_upstream_message(body(message), 400)
    assert expected in told
    assert "gpu-node-17" not in told


def test_the_log_keeps_the_message_but_not_what_the_client_sent() -> None:
    vllm = (
        "1 validation error for ChatCompletionRequest\nmessages.0.content\n  Input should be a "
        "valid string [type=string_type, input_value={'text': 'Patientin Erika M.'}, "
        "input_type=dict] on gpu-node-17"
    )
    logged = loggable_upstream_message(body(vllm))
    assert "validation error" in logged and "gpu-node-17" in logged
    assert "Erika" not in logged
    echoed = loggable_upstream_message(body("Invalid prompt 'Patientin Erika M.' for model x"))
    assert "Erika" not in echoed and "Invalid prompt" in echoed
    assert len(loggable_upstream_message(body("x" * 10_000))) <= 300
    sent = b'{"messages": [{"role": "user", "content": "Befund Erika Mustermann, geb. 1961"}]}'
    unquoted = loggable_upstream_message(body("cannot tokenize Erika Mustermann, geb."), sent)
    assert "cannot tokenize" in unquoted
    assert "Erika" not in unquoted and "Mustermann" not in unquoted


async def test_a_rejection_reaches_the_client_clean_and_the_operator_in_full(
    gw: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    for f in gw.fakes.values():
        f.mode, f.status = "status", 400
        f.error_body = body("bad sampling params on gpu-node-17.rz-west.internal (password=x1)")
    with caplog.at_level(logging.WARNING, logger="verbund.proxy"):
        resp = await gw.chat(messages=[{"role": "user", "content": "Geheimer Prompttext"}])
    assert resp.status_code == 400
    err = resp.json()["error"]
    assert err["code"] == "upstream_rejected"
    assert err["message"] == "The model server rejected the request as invalid."
    assert "gpu-node-17" not in resp.text and "password" not in resp.text
    logged = " ".join(r.getMessage() for r in caplog.records if r.name == "verbund.proxy")
    assert "gpu-node-17.rz-west.internal" in logged and "HTTP 400" in logged
    assert "Geheimer" not in caplog.text
