"""Batches against the real demo federation (llama.cpp with SmolLM2), with the openai SDK.

Includes the durability test: the access point is killed (SIGKILL) in the middle of a
batch and started again on the same state directory; the batch completes and every
``custom_id`` appears exactly once in its output or error file.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import openai
import pytest

from harness.demo import Demo, pid_alive, start_demo

pytestmark = pytest.mark.real
MODEL = "smollm2-135m"
TERMINAL = {"completed", "failed", "expired", "cancelled"}


def client(demo: Demo, institution: str = "uni-a") -> openai.OpenAI:
    return openai.OpenAI(base_url=demo.url + "/v1", api_key=demo.key(institution), max_retries=0)


def write_input(path: Path, n: int, max_tokens: int) -> list[str]:
    ids = [f"task-{i:03d}" for i in range(n)]
    with path.open("w") as f:
        for i, cid in enumerate(ids):
            body = {
                "model": MODEL,
                "messages": [{"role": "user", "content": f"Name a colour. ({i})"}],
                "max_tokens": max_tokens,
            }
            f.write(
                json.dumps(
                    {
                        "custom_id": cid,
                        "method": "POST",
                        "url": "/v1/chat/completions",
                        "body": body,
                    }
                )
                + "\n"
            )
    return ids


def wait_for(c: openai.OpenAI, batch_id: str, within: float, until: Any) -> Any:
    deadline = time.monotonic() + within
    while True:
        batch = c.batches.retrieve(batch_id)
        if until(batch):
            return batch
        assert time.monotonic() < deadline, f"batch still {batch.status}: {batch.request_counts}"
        time.sleep(0.25)


def result_lines(c: openai.OpenAI, file_id: str | None) -> list[dict[str, Any]]:
    if file_id is None:
        return []
    return [json.loads(x) for x in c.files.content(file_id).text.splitlines()]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    d = start_demo(tmp_path_factory.mktemp("batch-demo") / "state")
    yield d
    d.stop()


def test_openai_sdk_batch_end_to_end(demo: Demo, tmp_path: Path) -> None:
    c = client(demo)
    ids = write_input(tmp_path / "in.jsonl", 12, max_tokens=8)
    with (tmp_path / "in.jsonl").open("rb") as fh:
        f = c.files.create(file=fh, purpose="batch")
    assert f.purpose == "batch" and f.bytes == (tmp_path / "in.jsonl").stat().st_size
    batch = c.batches.create(
        input_file_id=f.id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        metadata={"test": "sdk"},
    )
    assert batch.status in ("validating", "in_progress")
    done = wait_for(c, batch.id, 180, lambda b: b.status in TERMINAL)
    assert done.status == "completed", done
    assert done.request_counts is not None
    assert (done.request_counts.total, done.request_counts.completed) == (12, 12)
    assert done.error_file_id is None and done.output_file_id
    lines = result_lines(c, done.output_file_id)
    assert sorted(x["custom_id"] for x in lines) == ids
    for x in lines:
        assert x["response"]["status_code"] == 200 and x["error"] is None
        body = x["response"]["body"]
        assert body["object"] == "chat.completion" and body["model"] == MODEL
        assert body["choices"][0]["message"]["content"] is not None
        assert 0 < body["usage"]["completion_tokens"] <= 8
    assert c.batches.list().data[0].id == batch.id
    # the demo's other institution sees none of it
    other = client(demo, "uni-b")
    with pytest.raises(openai.NotFoundError):
        other.batches.retrieve(batch.id)
    with pytest.raises(openai.NotFoundError):
        other.files.content(done.output_file_id)
    # usage: one record per item, as batch traffic
    with demo.admin() as admin:
        usage = admin.get("/admin/usage", params={"group_by": "institution"}).json()["data"]
    assert sum(int(r["requests"]) for r in usage if r["institution"] == "uni-a") >= 12


def _config_with_short_leases(tmp_path: Path) -> Path:
    text = resources.files("verbund").joinpath("demo.toml").read_text(encoding="utf-8")
    path = tmp_path / "demo-batch.toml"
    path.write_text(text + "\n[batch]\nlease_seconds = 6.0\n")
    return path


def test_batch_survives_a_killed_access_point(tmp_path: Path) -> None:
    state = tmp_path / "state"
    config = _config_with_short_leases(tmp_path)
    first = start_demo(state, extra=["--config", str(config)])
    try:
        c = client(first)
        ids = write_input(tmp_path / "in.jsonl", 45, max_tokens=24)
        with (tmp_path / "in.jsonl").open("rb") as fh:
            f = c.files.create(file=fh, purpose="batch")
        batch = c.batches.create(
            input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        wait_for(c, batch.id, 120, lambda b: b.request_counts and b.request_counts.completed >= 3)
    finally:
        first.process.kill()  # SIGKILL: no clean-up runs; llama servers die with it
    deadline = time.monotonic() + 30
    while any(pid_alive(p) for p in first.backend_pids().values()):
        assert time.monotonic() < deadline, "model servers outlived their parent"
        time.sleep(0.1)

    second = start_demo(state, extra=["--config", str(config)])
    try:
        assert second.key("uni-a") == first.key("uni-a")
        c = client(second)
        after_restart = c.batches.retrieve(batch.id)
        assert after_restart.status == "in_progress"
        assert after_restart.request_counts is not None
        assert 0 < after_restart.request_counts.completed < 45, "not killed mid-batch"
        done = wait_for(c, batch.id, 240, lambda b: b.status in TERMINAL)
        assert done.status == "completed", done
        out = result_lines(c, done.output_file_id)
        err = result_lines(c, done.error_file_id)
        seen = [x["custom_id"] for x in out + err]
        assert sorted(seen) == ids, "a custom_id is missing or appears twice"
        assert done.request_counts is not None
        assert done.request_counts.completed == len(out) and done.request_counts.failed == len(err)
        assert len(out) >= 40, err[:3]  # at most a few may fail; none may be lost
    finally:
        second.stop()
