"""Settlement cross-checks beyond requests and tokens per institution: jobs' node time
(the sites' signed CPU/GPU seconds against the access points' job records; on-demand
instances' node time stated, no counterpart) and the sites' engine counters (per model,
all institutions) against the access points' records per site and model."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from harness.federation import write_toml
from tests.conftest import MODEL, GatewayFactory, federation_dict
from tests.trust.chain import keyring, partner
from verbund.cli import Session, app
from verbund.store import UsageRow
from verbund.trust import ENGINE, UsageStatement, countersign, sign_statement

WEST = partner("west")
KEYS = keyring(WEST)
FT = "ft:centroid-classifier:uni-a:x"


def _line(inst: str, model: str, requests: int = 0, p: int = 0, c: int = 0, **kw: Any) -> Any:
    line = {"institution": inst, "model": model, "requests": requests}
    return line | {"prompt_tokens": p, "completion_tokens": c, **kw}


def _settlement(month: str, **extra: Any) -> dict[str, Any]:
    return {"month": month, "inputs": {"sha256": "x"}, "usage": [], **extra}


def test_jobs_node_time_is_compared_and_on_demand_time_is_stated_only() -> None:
    month = "2026-11"
    statement = sign_statement(
        WEST,
        month,
        [
            _line("uni-a", FT, 2, cpu_seconds=20.25),
            _line("", MODEL, cpu_seconds=30.0, gpu_seconds=7.25),  # an on-demand instance
        ],
        1.0,
    )
    usage = [{"site": "west", "institution": "uni-a", "requests": 2}]
    usage[0] |= {"prompt_tokens": 0, "completion_tokens": 0}
    node = {"site": "west", "institution": "uni-a", "model": FT, "jobs": 2, "gpu_seconds": 0.0}
    agreed = countersign(
        _settlement(month, usage=usage, node_time=[node | {"cpu_seconds": 20.25}]),
        [statement],
        KEYS,
    )
    assert not agreed.differs
    by = {n["institution"]: n for n in agreed.node_time}
    assert by["uni-a"]["recorded"] == {"cpu_seconds": 20.25, "gpu_seconds": 0.0}
    assert by[""]["recorded"] is None and by[""]["gpu_seconds"] == 7.25  # no counterpart

    short = countersign(
        _settlement(month, usage=usage, node_time=[node | {"cpu_seconds": 10.0}]),
        [statement],
        KEYS,
    )
    assert short.differences == [] and short.differs  # the requests agree, the seconds not
    (d,) = short.node_differences
    assert (d["site"], d["institution"], d["model"]) == ("west", "uni-a", FT)
    assert (d["recorded"]["cpu_seconds"], d["stated"]["cpu_seconds"]) == (10.0, 20.25)
    assert short.sha256 != agreed.sha256  # the recorded node time is covered
    dropped = countersign(_settlement(month, usage=usage), [statement], KEYS)
    assert [d["recorded"]["cpu_seconds"] for d in dropped.node_differences] == [0.0]


def test_engine_counters_are_compared_per_model_and_unmetered_engines_say_so() -> None:
    month = "2026-11"
    statement = sign_statement(
        WEST,
        month,
        [_line(ENGINE, MODEL, 0, 70, 40), _line(ENGINE, "llama", unmetered=True)],
        1.0,
    )
    by_model = [
        {"site": "west", "model": MODEL, "requests": 10, "prompt_tokens": 70}
        | {"completion_tokens": 40},
        {"site": "west", "model": "llama", "requests": 3, "prompt_tokens": 9}
        | {"completion_tokens": 9},
    ]
    agreed = countersign(_settlement(month, by_model=by_model), [statement], KEYS)
    assert not agreed.differs  # the engine lines are not an institution's usage
    assert {e["model"]: e["stated"] for e in agreed.engine}["llama"] is None
    by_model[0] = by_model[0] | {"prompt_tokens": 56, "completion_tokens": 32}
    short = countersign(_settlement(month, by_model=by_model), [statement], KEYS)
    (d,) = short.engine_differences
    assert d["model"] == MODEL and d["stated"] == {"prompt_tokens": 70, "completion_tokens": 40}
    assert d["recorded"] == {"prompt_tokens": 56, "completion_tokens": 32}
    flagged = statement.to_json()
    assert flagged["lines"][1]["unmetered"] is True  # signed: dropping the flag breaks it
    flagged["lines"][1].pop("unmetered")
    assert not UsageStatement.from_json(flagged).valid(KEYS)


async def _job_record(gw: Any, cpu_seconds: float) -> None:
    async with gw.services.store.session() as s, s.begin():
        s.add(
            UsageRow(
                id=f"job-{uuid.uuid4().hex}",
                ts=time.time(),
                request_id=uuid.uuid4().hex,
                access_point="ap",
                institution_id="uni-a",
                key_id="k",
                endpoint="/v1/fine_tuning/jobs",
                model=FT,
                site="west",
                backend="runner:local",
                status="ok",
                http_status=200,
                latency_ms=1.0,
                cpu_seconds=cpu_seconds,
            )
        )


async def test_settle_prints_node_time_differences_and_on_demand_time(
    gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    month = datetime.now(UTC).strftime("%Y-%m")
    async with gateway_factory() as gw:
        await _job_record(gw, 8.5)
        await _job_record(gw, 4.0)
        r = await gw.client.get("/admin/settlement", params={"month": month}, headers=gw.admin())
        settlement = r.json()
    (node,) = settlement["node_time"]
    assert (node["jobs"], node["cpu_seconds"], node["model"]) == (2, 12.5, FT)
    assert {m["model"] for m in settlement["by_model"]} == {FT}

    folder = tmp_path / "statements"
    folder.mkdir()
    lines = [_line("uni-a", FT, 2, cpu_seconds=20.5), _line("", MODEL, gpu_seconds=3.0)]
    statement = sign_statement(WEST, month, lines, time.time())
    (folder / "west.json").write_text(json.dumps(statement.to_json()))
    data = federation_dict(tmp_path)
    data["trust"] = {"partners": {"west": WEST.public_b64}}
    cfg = write_toml(data, tmp_path / "f.toml")

    class Api:
        def call(self, method: str, path: str, **kw: object) -> object:
            return json.loads(json.dumps(settlement))

        def close(self) -> None:
            pass

    out = CliRunner().invoke(
        app,
        ["settle", "--month", month, "--statements", str(folder), "--config", str(cfg),
         "--url", "http://ap.test", "--admin-key", "k"],
        obj=Session(lambda _t: Api()),  # type: ignore[arg-type,return-value]
    )  # fmt: skip
    assert out.exit_code == 2, out.output
    assert (
        f"NODE TIME DIFFERENCE at west for uni-a ({FT}): access points recorded 12.5 CPU s,"
        " 0 GPU s, the site's signed statement says 20.5 CPU s, 0 GPU s"
    ) in out.output
    assert f"node time of on-demand instances ({MODEL}) stated by west: 0 CPU s, 3 GPU s" in (
        out.output
    )
    assert "no counterpart at the access points" in out.output
