"""`verbund gateway` with one and with two real worker processes: one port, one usage ledger."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from harness import federation as fed
from harness.gateway import GatewayProcess
from harness.polling import poll
from harness.ports import free_port
from harness.stub_backend import stub_backend


@pytest.fixture
def backend() -> Iterator[int]:
    with stub_backend(0.0) as port:
        yield port


@pytest.mark.real
@pytest.mark.parametrize(
    ("workers", "spool"),
    [(1, ["ap-w"]), (2, ["ap-w.w0", "ap-w.w0.lock", "ap-w.w1", "ap-w.w1.lock"])],
)
def test_workers_serve_and_account_every_request(
    tmp_path: Path, backend: int, workers: int, spool: list[str]
) -> None:
    state = tmp_path / "state"
    config = fed.federation(
        "ap-w",
        state,
        [fed.site("west", "NW", [fed.backend("west-1", f"http://127.0.0.1:{backend}", ["smol"])])],
        port=free_port(),
        gateway={"workers": workers},
        models=["smol"],
        institutions=[fed.institution("uni-a", home_region="NW")],
    )
    gw = GatewayProcess(config, tmp_path)
    base = gw.url
    try:
        gw.start()
        key = gw.create_key("uni-a")["key"]
        body = {"model": "smol", "messages": [{"role": "user", "content": "hi"}]}
        for _ in range(30):  # a new connection each time: either worker may accept it
            r = httpx.post(
                f"{base}/v1/chat/completions",
                json=body,
                headers={"authorization": f"Bearer {key}"},
                timeout=10,
            )
            assert r.status_code == 200, r.text
            assert r.json()["choices"][0]["message"]["content"] == "hi"
        assert sorted(p.name for p in (state / "usage-spool").iterdir()) == spool

        def accounted() -> bool:  # both workers' spools end up in the one store
            rows = gw.admin("GET", "/admin/usage", params={"group_by": "institution"})["data"]
            return sum(r["requests"] for r in rows) == 30

        poll(accounted, "all 30 requests in the usage report", 30, every=0.2)
    finally:
        rc = gw.stop(30)
    assert rc == 0, gw.process.log_tail()
