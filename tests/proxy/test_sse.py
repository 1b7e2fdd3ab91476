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
