"""Direct ingress metered from the engines' own token counters: parsed per model from
their Prometheus text (the simulated engine's vLLM and SGLang names, llama.cpp's), grown
since the last reading (a reset counter counts whole, the first reading is a baseline),
signed per model under institution "*", flagged ``unmetered`` where an engine has no
counters; settlement compares them with the access points' records per site and model.
With real processes: a site reached directly (a simulated engine, its agent with a key,
an access point), ``verbund settle --from-sites`` agrees, and shows the tokens of records
the access point dropped."""

from __future__ import annotations

import dataclasses
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from harness.agent import AgentFederation
from harness.federation import federation, institution
from harness.gateway import GatewayProcess
from harness.polling import poll
from harness.ports import free_port
from harness.simengine import MODEL
from tests.trust.chain import keyring, partner
from verbund.agent._counters import parse_token_counters, token_growth
from verbund.simengine import render_metrics
from verbund.simengine._engine import Engine, EngineSpec
from verbund.trust import ENGINE, countersign, generate_key_file, sign_statement

LLAMA_CPP = """# HELP llamacpp:prompt_tokens_total Number of prompt tokens processed.
# TYPE llamacpp:prompt_tokens_total counter
llamacpp:prompt_tokens_total 120
# TYPE llamacpp:tokens_predicted_total counter
llamacpp:tokens_predicted_total 48
"""


@pytest.mark.parametrize("style", ["vllm", "sglang"])
def test_the_simulated_engines_token_counters_are_read_per_model(style: str) -> None:
    engine = Engine(EngineSpec(name="e", models=("m1",), metrics_style=style))  # type: ignore[arg-type]
    engine.stats.prompt_tokens, engine.stats.generation_tokens = 35, 12
    assert parse_token_counters(render_metrics(engine), ["m1"]) == {"m1": (35.0, 12.0)}
    assert parse_token_counters(render_metrics(engine), ["other"]) == {}  # not attributable


def test_unlabelled_counters_belong_to_the_only_model_and_no_counters_is_none() -> None:
    assert parse_token_counters(LLAMA_CPP, ["llama"]) == {"llama": (120.0, 48.0)}
    assert parse_token_counters(LLAMA_CPP, ["a", "b"]) == {}
    load_only = "# TYPE vllm:num_requests_running gauge\nvllm:num_requests_running 2\n"
    assert parse_token_counters(load_only, ["m"]) is None
    assert parse_token_counters("not prometheus {{{", ["m"]) is None


def test_growth_is_counted_from_the_last_reading_and_a_reset_counts_whole() -> None:
    assert token_growth(None, {"m": (100.0, 40.0)}) == {}  # the baseline
    assert token_growth({"m": (100.0, 40.0)}, {"m": (130.0, 45.0)}) == {"m": (30, 5)}
    assert token_growth({"m": (100.0, 40.0)}, {"m": (100.0, 40.0)}) == {}
    assert token_growth({"m": (100.0, 40.0)}, {"m": (7.0, 2.0)}) == {"m": (7, 2)}  # restarted
    assert token_growth({}, {"n": (3.0, 1.0)}) == {"n": (3, 1)}  # a model seen first now


def test_a_direct_sites_figures_per_institution_are_not_compared_its_engines_are() -> None:
    key = partner("sued")
    lines = [
        {"institution": ENGINE, "model": MODEL, "requests": 0}
        | {"prompt_tokens": 30, "completion_tokens": 12},
    ]
    statement = sign_statement(key, "2026-11", lines, 1.0)
    usage = [{"site": "sued", "institution": "uni-a", "requests": 5}]
    usage[0] |= {"prompt_tokens": 30, "completion_tokens": 12}
    by_model = [{"site": "sued", "model": MODEL, **usage[0]}]
    settlement = {"month": "2026-11", "inputs": {"sha256": "x"}, "usage": usage}
    settlement["by_model"] = by_model
    relayed = countersign(settlement, [statement], keyring(key))
    assert [d["institution"] for d in relayed.differences] == ["uni-a"]  # stated 0 at a relay
    direct = countersign(settlement, [statement], keyring(key), direct=["sued"])
    assert not direct.differs and direct.direct == ["sued"]
    assert direct.engine[0]["stated"] == {"prompt_tokens": 30, "completion_tokens": 12}


# --- real processes -----------------------------------------------------------------------


@dataclasses.dataclass
class Fed:
    sites: AgentFederation
    gateway: GatewayProcess
    work: Path

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "verbund.cli", *args],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, **self.sites.gateway_env()},
            check=False,
        )


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fed]:
    work = tmp_path_factory.mktemp("engine-counters")
    sites = AgentFederation(work, [("sued", "BY", "direct", [])])
    site = sites.sites["sued"]
    generate_key_file(work / "sued-signing.pem")
    site.config["trust"] = {"signing_key_file": str(work / "sued-signing.pem")}
    site.config["backends"][0]["metrics_url"] = site.engine.url + "/metrics"
    gateway: GatewayProcess | None = None
    try:
        sites.start()
        config = federation(
            "ap-direct",
            work / "ap",
            sites.gateway_sites(),
            port=free_port(),
            gateway={"home_site": "sued"},
            institutions=[institution("uni-a", home_region="BY")],
            trust={"checkpoint_interval": 0},
        )
        gateway = GatewayProcess(config, work / "ap", env=sites.gateway_env())
        gateway.serve()
        yield Fed(sites, gateway, work)
    finally:
        if gateway is not None:
            gateway.stop()
        sites.close()


def _chat(fed: Fed) -> httpx.Response:
    return httpx.post(
        fed.gateway.url + "/v1/chat/completions",
        json={"model": MODEL, "messages": [{"role": "user", "content": "Hallo"}], "max_tokens": 4},
        headers={"authorization": f"Bearer {fed.gateway.key}"},
        timeout=30,
        trust_env=False,
    )


def _engine_line(fed: Fed, month: str) -> dict[str, object]:
    with fed.sites.sites["sued"].agent.client() as agent:
        r = agent.get("/usage/statements", params={"month": month})
    assert r.status_code == 200, r.text
    lines = [ln for ln in r.json()["lines"] if ln["institution"] == ENGINE]
    return next((ln for ln in lines if ln["model"] == MODEL), {})


@pytest.mark.real
def test_a_direct_sites_engine_counters_countersign_the_access_points_records(fed: Fed) -> None:
    month = datetime.now(UTC).strftime("%Y-%m")
    # the agent's first reading of its engine is a baseline: made (and stated) before traffic
    poll(lambda: "unmetered" not in _engine_line(fed, month), "the engine read", 30, 0.2)
    before = _engine_line(fed, month)
    poll(lambda: _chat(fed).status_code == 200, "the site reachable", 30, 0.2)
    for _ in range(4):
        r = _chat(fed)
        assert r.status_code == 200 and r.headers["x-verbund-site"] == "sued", r.text
    line = _engine_line(fed, month)
    assert int(line["completion_tokens"]) > int(before["completion_tokens"])  # type: ignore[call-overload]
    with fed.sites.sites["sued"].agent.client() as agent:
        lines = agent.get("/usage/statements", params={"month": month}).json()["lines"]
    # the engine's counters name its first model only: the other is stated unmetered
    assert {"institution": ENGINE, "model": "sued-llm", "requests": 0, "prompt_tokens": 0,
            "completion_tokens": 0, "unmetered": True} in lines  # fmt: skip
    config = str(fed.gateway.config_path)
    target = ["--url", fed.gateway.url, "--admin-key", fed.gateway.admin_key]
    settle = ["settle", "--month", month, "--from-sites", "--config", config, *target]
    agreed = fed.cli(*settle)
    assert agreed.returncode == 0, agreed.stdout + agreed.stderr
    assert "countersigned by: sued" in agreed.stdout
    assert "sued is reached directly" in agreed.stdout
    assert "token counters per model are (below)" in agreed.stdout
    assert "agree with every signed statement" in agreed.stdout

    db = sqlite3.connect(fed.work / "ap" / "verbund.db")  # the operator drops two records
    with db:
        dropped = db.execute(
            "SELECT SUM(prompt_tokens), SUM(completion_tokens) FROM (SELECT * FROM "
            "usage_records WHERE site = 'sued' AND status = 'ok' LIMIT 2)"
        ).fetchone()
        db.execute(
            "DELETE FROM usage_records WHERE id IN (SELECT id FROM usage_records "
            "WHERE site = 'sued' AND status = 'ok' LIMIT 2)"
        )
    db.close()
    short = fed.cli(*settle)
    assert short.returncode == 2, short.stdout + short.stderr
    stated = _engine_line(fed, month)
    p, c = int(stated["prompt_tokens"]), int(stated["completion_tokens"])  # type: ignore[call-overload]
    assert (
        f"ENGINE COUNTER DIFFERENCE at sued for {MODEL} (all institutions): access points "
        f"recorded {p - dropped[0]}+{c - dropped[1]} tokens, the site's engines counted {p}+{c}"
    ) in short.stdout
