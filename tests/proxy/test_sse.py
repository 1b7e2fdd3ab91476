from __future__ import annotations

import json

from verbund.proxy import SSEUsageFilter


def events(*bodies: object, sep: bytes = b"\n\n") -> bytes:
    return b"".join(
        b"data: " + (b if isinstance(b, bytes) else json.dumps(b).encode()) + sep for b in bodies
    )


CHUNK = {"choices": [{"delta": {"content": "x"}}]}
USAGE = {"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 2}}


def test_forwards_events_unchanged_and_reads_usage() -> None:
    raw = events(CHUNK, CHUNK, USAGE, b"[DONE]")
    f = SSEUsageFilter(drop_usage_chunk=False)
    assert f.feed(raw) == raw
    assert f.usage is not None and (f.usage.prompt_tokens, f.usage.completion_tokens) == (5, 2)
    assert f.done and f.events == 2


def test_drops_the_usage_chunk_the_client_did_not_ask_for() -> None:
    f = SSEUsageFilter(drop_usage_chunk=True)
    out = f.feed(events(CHUNK, USAGE, b"[DONE]", sep=b"\r\n\r\n"))
    assert b'"usage"' not in out and out.endswith(b"[DONE]\r\n\r\n")
    assert f.usage is not None and f.usage.completion_tokens == 2


def test_events_split_across_reads_are_reassembled() -> None:
    raw = events(CHUNK, USAGE, b"[DONE]")
    f = SSEUsageFilter(drop_usage_chunk=True)
    out = b"".join(f.feed(raw[i : i + 7]) for i in range(0, len(raw), 7))
    assert out == events(CHUNK, b"[DONE]")
    assert f.usage is not None


def test_incomplete_tail_is_flushed() -> None:
    f = SSEUsageFilter(drop_usage_chunk=False)
    assert f.feed(b"data: [DONE]") == b""
    assert f.tail() == b"data: [DONE]"
    assert f.done


def test_usage_the_backend_did_not_send_is_written_before_done() -> None:
    head = {"id": "c9", "object": "chat.completion.chunk", "created": 3, "model": "m"}
    f = SSEUsageFilter(drop_usage_chunk=False, prompt_estimate=40)
    out = f.feed(events({**head, **CHUNK}, CHUNK, CHUNK, b"[DONE]"))
    parts = out.split(b"\n\n")
    usage = json.loads(parts[3][len(b"data: ") :])
    assert usage == {
        **head,
        "choices": [],
        "usage": {"prompt_tokens": 40, "completion_tokens": 3, "total_tokens": 43},
    }
    assert parts[4] == b"data: [DONE]"
    assert f.usage is None  # the record still says the usage is estimated


def test_no_usage_of_our_own_when_the_backend_sent_one_or_none_was_asked() -> None:
    sent = SSEUsageFilter(drop_usage_chunk=False, prompt_estimate=40)
    assert sent.feed(events(CHUNK, USAGE, b"[DONE]")) == events(CHUNK, USAGE, b"[DONE]")
    unasked = SSEUsageFilter(drop_usage_chunk=True, prompt_estimate=40)
    assert unasked.feed(events(CHUNK, b"[DONE]")) == events(CHUNK, b"[DONE]")


def test_a_complete_answer_as_stream_chunks() -> None:
    from verbund.proxy import stream_of_answer

    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    answer = {
        "id": "x",
        "created": 2,
        "model": "m",
        "choices": [
            {
                "index": 0,
                "finish_reason": "tool_calls",
                "message": {"role": "assistant", "content": None, "tool_calls": [call]},
            }
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7},
    }
    raw = stream_of_answer(json.dumps(answer).encode(), include_usage=True)
    datas = [e[len(b"data: ") :] for e in raw.split(b"\n\n") if e]
    assert datas[-1] == b"[DONE]"
    chunks = [json.loads(d) for d in datas[:-1]]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert chunks[1]["choices"][0]["delta"]["tool_calls"] == [{"index": 0, **call}]
    assert chunks[2]["choices"][0]["finish_reason"] == "tool_calls"
    assert chunks[3]["usage"]["total_tokens"] == 7
    without = stream_of_answer(json.dumps(answer).encode(), include_usage=False)
    assert b'"usage"' not in without
