"""A planned drain of a real site under load costs zero failed requests."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from harness.demo import Demo, start_demo

pytestmark = pytest.mark.real
MODEL = "smollm2-135m"


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[Demo]:
    d = start_demo(tmp_path / "state")
    yield d
    d.stop()


def test_drain_under_load_fails_nothing(demo: Demo) -> None:
    c = openai.OpenAI(
        base_url=demo.url + "/v1", api_key=demo.key("uni-a"), max_retries=0, timeout=60
    )
    results: list[tuple[float, str, str]] = []  # (started, site, error)
    lock = threading.Lock()
    enough = threading.Event()

    def worker(stream: bool) -> None:
        for _ in range(8):
            site, err = "", ""
            started = time.monotonic()
            try:
                if stream:
                    s = c.chat.completions.with_raw_response.create(
                        model=MODEL,
                        messages=[{"role": "user", "content": "Tell a story."}],
                        max_tokens=32,
                        stream=True,
                    )
                    site = s.headers["x-verbund-site"]
                    text = "".join(
                        ch.choices[0].delta.content or "" for ch in s.parse() if ch.choices
                    )
                    err = "" if text else "empty stream"
                else:
                    r = c.chat.completions.with_raw_response.create(
                        model=MODEL,
                        messages=[{"role": "user", "content": "Name a city."}],
                        max_tokens=16,
                    )
                    site = r.headers["x-verbund-site"]
                    err = "" if r.parse().choices[0].message.content else "empty"
            except openai.APIError as exc:
                err = repr(exc)
            with lock:
                results.append((started, site, err))
                if len(results) >= 6:
                    enough.set()

    threads = [threading.Thread(target=worker, args=(i % 2 == 0,)) for i in range(4)]
    for t in threads:
        t.start()
    assert enough.wait(120)
    with demo.admin() as admin:
        assert admin.post("/admin/sites/rz-west/drain").status_code == 200
    drained_at = time.monotonic()
    for t in threads:
        t.join(300)
    assert [r for r in results if r[2]] == []
    assert len(results) == 32
    # what started once the drain was acknowledged goes elsewhere; what ran on finishes
    late = [r for r in results if r[0] > drained_at]
    assert late, "no request started after the drain"
    assert all(r[1] != "rz-west" for r in late)
    with demo.admin() as admin:
        status = admin.get("/status").json()
    assert next(s for s in status["sites"] if s["name"] == "rz-west")["state"] == "draining"
