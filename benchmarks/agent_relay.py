"""Site agents: the latency the agent relay adds, and how fast a catalogue change reaches
an access point.

One nginx mock backend (the overhead benchmark's, answering a fixed completion or a
fixed 20-chunk stream at once) behind one real site agent (``verbund site``), and two
access points (``verbund gateway``, one worker each) following that agent: one with
``ingress = "direct"`` (requests go to the mock), one with ``ingress = "agent"``
(requests go through the agent's relay). Open-loop load (the overhead benchmark's load
generator) at fixed rates, the three targets interleaved step by step; latency counted
from each request's scheduled send time. The relay's cost is the ``agent`` row minus the
``direct`` row.

Catalogue propagation: a model is added to the running agent ``--rounds`` times, by
rewriting site.toml (taken up by the agent's file watch, checked every second) and by
``POST /site/reload`` (an operator's call), and the access point is polled (every 10 ms)
until the model answers; then it is removed again the same way.

    python -m benchmarks.agent_relay            # ~2 minutes
    python -m benchmarks.agent_relay --quick    # ~1 minute

Results: ``benchmarks/results/agent_relay.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from benchmarks.overhead import servers
from benchmarks.overhead.loadgen import GeneratorPool, Job, Result
from benchmarks.overhead.run import machine
from benchmarks.report import markdown_table
from harness import federation as fed
from harness.agent import AgentProcess, agent_key_env, site_toml
from harness.federation import write_toml
from harness.gateway import GatewayProcess
from harness.load import percentile
from harness.polling import poll
from harness.ports import free_port

RESULTS = servers.ROOT / "benchmarks" / "results"


def _gateway(work: Path, name: str, agent: AgentProcess, ingress: str) -> servers.Target:
    config = fed.federation(
        name,
        work / name,
        [
            {
                "name": "bench",
                "agent_url": agent.url,
                "agent_key_env": agent_key_env("bench"),
                "ingress": ingress,
            }
        ],
        port=free_port(),
        gateway={"home_site": "bench"},
        institutions=[fed.institution("bench-uni", home_region="NW")],
    )
    gw = GatewayProcess(config, work / name, env={agent_key_env("bench"): agent.ap_key}, name=name)
    gw.serve("bench-uni", within=120)
    return servers.Target(
        name,
        int(config["gateway"]["listen"].rpartition(":")[2]),
        "/v1/chat/completions",
        "/v1/chat/completions",
        headers=(("Authorization", f"Bearer {gw.key}"),),
        procs=[gw.process],
    )


def _row(target: str, kind: str, rate: int, res: Result) -> dict[str, Any]:
    lat = [x * 1000 for x in res.latency]
    return {
        "target": target,
        "kind": kind,
        "rate": rate,
        "sent": res.sent,
        "ok": res.ok,
        "errors": sum(res.errors.values()),
        "error_kinds": ",".join(f"{k}:{v}" for k, v in sorted(res.errors.items())) or "-",
        "p50_ms": round(percentile(lat, 50), 2),
        "p90_ms": round(percentile(lat, 90), 2),
        "p99_ms": round(percentile(lat, 99), 2),
    }


def _paired(targets: list[servers.Target], n: int) -> list[dict[str, Any]]:
    """One request at a time, the targets in turn (so drifting load hits them alike):
    each target's latency, and the median pairwise difference to the ``direct`` one."""
    clients = {
        t.name: httpx.Client(
            base_url=f"http://127.0.0.1:{t.port}", headers=dict(t.headers), trust_env=False
        )
        for t in targets
    }
    took: dict[str, list[float]] = {t.name: [] for t in targets}
    body = servers.CHAT_BODY
    try:
        for _ in range(n):
            for t in targets:
                began = time.perf_counter()
                r = clients[t.name].post(
                    t.chat_path, content=body, headers={"content-type": "application/json"}
                )
                took[t.name].append((time.perf_counter() - began) * 1000)
                r.raise_for_status()
    finally:
        for c in clients.values():
            c.close()
    rows = []
    for name, values in took.items():
        diffs = [a - b for a, b in zip(values, took["direct"], strict=True)]
        rows.append(
            {
                "target": name,
                "requests": n,
                "p50_ms": round(percentile(values, 50), 2),
                "p90_ms": round(percentile(values, 90), 2),
                "p99_ms": round(percentile(values, 99), 2),
                "vs_direct_median_ms": round(statistics.median(diffs), 2),
            }
        )
    return rows


def _propagation(
    agent: AgentProcess, config: dict[str, Any], gw_url: str, key: str, rounds: int
) -> list[dict[str, Any]]:
    """Seconds from a change at the agent to its effect at the access point."""
    out: list[dict[str, Any]] = []
    headers = {"authorization": f"Bearer {key}"}
    base_models = list(config["models"])
    base_backend = list(config["backends"][0]["models"])

    def offer(extra: list[str]) -> None:
        config["models"] = base_models + [{"name": m, "kind": "chat"} for m in extra]
        config["backends"][0]["models"] = base_backend + extra
        tmp = agent.config_path.with_suffix(".tmp")
        write_toml(config, tmp)
        tmp.replace(agent.config_path)

    def visible(model: str, want: bool) -> bool:
        r = httpx.get(f"{gw_url}/v1/models/{model}", headers=headers, timeout=5, trust_env=False)
        return (r.status_code == 200) is want

    with agent.client(agent.operator_key) as op:
        for i in range(rounds):
            for how in ("file watch", "reload route"):
                model = f"prop-{i}-{how.split()[0]}"
                began = time.perf_counter()
                offer([model])
                if how == "reload route":
                    op.post("/site/reload").raise_for_status()
                poll(lambda m=model: visible(m, True), model, 30, every=0.01)  # type: ignore[misc]
                added = time.perf_counter() - began
                began = time.perf_counter()
                offer([])
                if how == "reload route":
                    op.post("/site/reload").raise_for_status()
                poll(lambda m=model: visible(m, False), model, 30, every=0.01)  # type: ignore[misc]
                removed = time.perf_counter() - began
                out.append({"round": i, "how": how, "added_s": added, "removed_s": removed})
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--rates", default="20,50")
    p.add_argument("--stream-rate", type=int, default=20)
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--out", type=Path, default=RESULTS / "agent_relay")
    args = p.parse_args(argv)
    duration = 4.0 if args.quick else args.duration
    rounds = 3 if args.quick else args.rounds
    rates = [int(r) for r in args.rates.split(",")]
    nginx = servers.ensure_nginx()
    info: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "python": platform.python_version(),
        "settings": {"rates": rates, "stream_rate": args.stream_rate, "duration": duration},
    }
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="vb-agent-bench-") as tmp:
        work = Path(tmp)
        mock = servers.start_mock(nginx, work)
        mock.name = "mock"
        backend = f"http://127.0.0.1:{mock.port}"
        config = site_toml(
            "bench",
            f"127.0.0.1:{free_port()}",
            work / "site",
            site={"max_data_class": "sensitive"},
            backends=[
                {"name": "mock", "url": backend, "models": [servers.MODEL]},
                {"name": "mock-stream", "url": backend + "/s", "models": [servers.STREAM_MODEL]},
            ],
            models=[{"name": servers.MODEL}, {"name": servers.STREAM_MODEL}],
        )
        agent = AgentProcess(config, work)
        targets: list[servers.Target] = []
        pool = GeneratorPool(1)
        try:
            agent.start(120)
            direct = _gateway(work, "direct", agent, "direct")
            relayed = _gateway(work, "agent", agent, "agent")
            targets = [mock, direct, relayed]
            plan = [("chat", r) for r in rates] + [("stream", args.stream_rate)]
            for kind, rate in plan:
                for t in targets:
                    job = Job((t.template(kind == "stream"),), (1.0,), duration, rate=rate)
                    pool.run(Job(job.templates, (1.0,), 1.0, rate=rate))  # warm-up
                    rows.append(_row(t.name, kind, rate, pool.run(job)))
                    print(rows[-1], flush=True)
            paired = _paired(targets, 100 if args.quick else 300)
            for r in paired:
                print(r, flush=True)
            key = dict(relayed.headers)["Authorization"].removeprefix("Bearer ")
            prop = _propagation(agent, config, f"http://127.0.0.1:{relayed.port}", key, rounds)
        finally:
            pool.close()
            for t in targets[1:]:
                t.stop()
            agent.stop()
            mock.stop()
    summary = []
    for how in ("file watch", "reload route"):
        added = [r["added_s"] for r in prop if r["how"] == how]
        removed = [r["removed_s"] for r in prop if r["how"] == how]
        summary.append(
            {
                "how": how,
                "rounds": len(added),
                "added_median_s": round(statistics.median(added), 3),
                "added_max_s": round(max(added), 3),
                "removed_median_s": round(statistics.median(removed), 3),
                "removed_max_s": round(max(removed), 3),
            }
        )
    info.update(latency=rows, paired=paired, propagation=prop, propagation_summary=summary)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(info, indent=2))
    added = []
    for kind, rate in {(r["kind"], r["rate"]) for r in rows}:
        by = {r["target"]: r for r in rows if r["kind"] == kind and r["rate"] == rate}
        added.append(
            {
                "kind": kind,
                "rate": rate,
                "added_p50_ms": round(by["agent"]["p50_ms"] - by["direct"]["p50_ms"], 2),
                "added_p99_ms": round(by["agent"]["p99_ms"] - by["direct"]["p99_ms"], 2),
            }
        )
    added.sort(key=lambda r: (r["kind"], r["rate"]))
    m = info["machine"]
    text = "\n\n".join(
        [
            "# Site agent: relay latency and catalogue propagation",
            f"Date: {info['date']}. Machine: {m['nproc']} cores ({m['cpu']}), load average at "
            f"start {', '.join(f'{x:.1f}' for x in m['loadavg_at_start'])} (shared with other "
            f"work). Python {info['python']}. Command: `python -m benchmarks.agent_relay"
            f"{' --quick' if args.quick else ''}`.",
            "## Latency (ms, from scheduled send; `mock` = the backend itself, `direct` = an "
            "access point with ingress direct, `agent` = one with ingress through the agent)",
            markdown_table(
                rows,
                [
                    "target",
                    "kind",
                    "rate",
                    "sent",
                    "ok",
                    "errors",
                    "error_kinds",
                    "p50_ms",
                    "p90_ms",
                    "p99_ms",
                ],
            ),
            "## One request at a time, the three in turn (ms; `vs_direct_median_ms`: median of "
            "the pairwise differences to the `direct` access point)",
            markdown_table(
                paired,
                ["target", "requests", "p50_ms", "p90_ms", "p99_ms", "vs_direct_median_ms"],
            ),
            "## Added by the relay under open-loop load (agent minus direct access point)",
            markdown_table(added, ["kind", "rate", "added_p50_ms", "added_p99_ms"]),
            "## Catalogue propagation (s, change at the agent until the access point answers)",
            markdown_table(
                summary,
                [
                    "how",
                    "rounds",
                    "added_median_s",
                    "added_max_s",
                    "removed_median_s",
                    "removed_max_s",
                ],
            ),
        ]
    )
    args.out.with_suffix(".md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
