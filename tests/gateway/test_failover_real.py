"""Killing a real llama.cpp backend under load: requests without bytes sent still succeed."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from harness.demo import Demo, start_demo

pytestmark = pytest.mark.real
MODEL = "smollm2-135m"
WORKERS = 4
PER_WORKER = 10


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[Demo]:
    d = start_demo(tmp_path / "state")
    yield d
    d.stop()


def test_kill_one_site_under_load(demo: Demo) -> None:
    c = openai.OpenAI(
        base_url=demo.url + "/v1", api_key=demo.key("uni-a"), max_retries=0, timeout=60
    )
    results: list[tuple[float, str, str]] = []  # (finished at, site, error)
    done_some = threading.Event()
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(PER_WORKER):
            try:
                raw = c.chat.completions.with_raw_response.create(
                    model=MODEL,
                    messages=[{"role": "user", "content": "Name a colour."}],
                    max_tokens=24,
                )
                ok = bool(raw.parse().choices[0].message.content)
                entry = (time.monotonic(), raw.headers["x-verbund-site"], "" if ok else "empty")
            except openai.APIError as exc:
                entry = (time.monotonic(), "", repr(exc))
            with lock:
                results.append(entry)
                if len(results) >= WORKERS * 2:
                    done_some.set()

    threads = [threading.Thread(target=worker) for _ in range(WORKERS)]
    for t in threads:
        t.start()
    assert done_some.wait(120), "no requests completed before the kill"
    victim = demo.backend_pids()["west-llama-1"]
    os.kill(victim, signal.SIGKILL)
    killed_at = time.monotonic()
    for t in threads:
        t.join(300)

    errors = [r for r in results if r[2]]
    assert len(results) == WORKERS * PER_WORKER
    assert errors == [], errors
    after = [r for r in results if r[0] > killed_at + 1.0]
    assert after, "the load ended too soon to observe routing after the kill"
    assert all(r[1] != "rz-west" for r in after)

    with demo.admin() as admin:
        sites = admin.get("/admin/sites").json()["sites"]
    west = next(s for s in sites if s["name"] == "rz-west")
    health = {b["name"]: b["healthy"] for b in west["backends"]}
    assert health.pop("west-llama-1") is False  # the killed one, and only it, is down
    assert health and all(health.values()), health
    assert west["healthy"] is True  # a site is up while any of its backends is

    # a stream started after the kill goes elsewhere and completes
    stream = c.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=8, stream=True
    )
    assert "".join(ch.choices[0].delta.content or "" for ch in stream if ch.choices).strip()
