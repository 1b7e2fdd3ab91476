"""The benchmark's report: the environment, a table, the targets, Markdown."""

from __future__ import annotations

import datetime as dt
import math
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

BASELINES = ("round_robin", "random", "least_outstanding")
ROOT = Path(__file__).resolve().parent.parent.parent


def environment() -> dict[str, Any]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass

    def git(*args: str) -> str:
        try:
            out = subprocess.run(
                ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10, check=False
            )
        except OSError:
            return ""
        return out.stdout.strip()

    versions = {}
    for pkg in ("verbund", "httpx", "starlette", "uvicorn", "uvloop"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = "-"
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.system()} {platform.release()} {platform.machine()}",
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "load_before": os.getloadavg(),
        "python": sys.version.split()[0],
        "git": git("rev-parse", "--short", "HEAD")
        + (" (dirty)" if git("status", "--porcelain") else ""),
        "branch": git("rev-parse", "--abbrev-ref", "HEAD"),
        "versions": versions,
    }


def _s(v: float) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.2f}"


COLUMNS = [
    ("workload", lambda r: r["workload"]),
    ("policy", lambda r: r["policy"]),
    ("offered/s", lambda r: f"{r['offered_rps']:.1f}"),
    ("sent", lambda r: str(r["sent"])),
    ("failed", lambda r: f"{r['failed']} ({r['failed_before_stream']} pre-stream)"),
    ("TTFT p50 s", lambda r: _s(r["ttft_p50"])),
    ("TTFT p99 s", lambda r: _s(r["ttft_p99"]) + ("*" if r["cut_off_waiting"] else "")),
    ("e2e p99 s", lambda r: _s(r["e2e_p99"])),
    ("done/s", lambda r: f"{r['throughput_rps']:.1f}"),
    ("tok/s", lambda r: f"{r['tokens_per_s']:.0f}"),
    ("cache hit", lambda r: f"{100 * r['prefix_hit_rate']:.0f}%"),
    ("served by site", lambda r: " ".join(f"{k or '?'}:{v}" for k, v in r["by_site"].items())),
]


def _rows(runs: list[dict[str, Any]]) -> list[list[str]]:
    return [[f(r) for _, f in COLUMNS] for r in runs]


def table(runs: list[dict[str, Any]]) -> str:
    header = [c for c, _ in COLUMNS]
    rows = _rows(runs)
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(lines)


def check_targets(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The issue's targets for the ``score`` policy, where the runs allow a verdict."""
    by = {(r["workload"], r["policy"]): r for r in runs}
    verdicts: dict[str, Any] = {}
    lines: list[str] = []
    for wl in ("skewed", "prefix"):
        score = by.get((wl, "score"))
        base = [by[(wl, b)] for b in BASELINES if (wl, b) in by]
        if score is None or not base:
            continue
        best = min(base, key=lambda r: r["ttft_p99"])
        fastest = max(base, key=lambda r: r["tokens_per_s"])
        latency_ok = score["ttft_p99"] <= 0.5 * best["ttft_p99"]
        throughput_ok = score["tokens_per_s"] >= 0.95 * fastest["tokens_per_s"]
        verdicts[wl] = {"p99_at_most_half": latency_ok, "no_throughput_loss": throughput_ok}
        lines.append(
            f"target {wl}: score TTFT p99 {_s(score['ttft_p99'])} s vs best baseline "
            f"{best['policy']} {_s(best['ttft_p99'])} s (need <= {_s(0.5 * best['ttft_p99'])}): "
            f"{'MET' if latency_ok else 'NOT MET'}; throughput {score['tokens_per_s']:.0f} tok/s "
            f"vs {fastest['policy']} {fastest['tokens_per_s']:.0f} tok/s (need >= 95 %): "
            f"{'MET' if throughput_ok else 'NOT MET'}"
        )
    kill = by.get(("kill", "score"))
    if kill is not None:
        ok = kill["failed_before_stream"] == 0
        verdicts["kill"] = {"zero_failed_before_stream": ok}
        lines.append(
            f"target kill: score failed before streaming {kill['failed_before_stream']} "
            f"(of {kill['failed']} failed): {'MET' if ok else 'NOT MET'}"
        )
    return {"verdicts": verdicts, "lines": lines}


def render_markdown(
    env: dict[str, Any], setup: dict[str, Any], runs: list[dict[str, Any]], targets: dict[str, Any]
) -> str:
    header = [c for c, _ in COLUMNS]
    fresh = {"restart": "restarted", "reset": "reset through POST /_sim/reset"}[
        setup["engines_between_policies"]
    ]
    out = [
        "# Routing benchmark",
        "",
        f"- date: {env['date']}",
        f"- machine: {env['machine']}, {env['cpus']} CPUs ({env['cpu']}); load average "
        f"before {', '.join(f'{x:.1f}' for x in env['load_before'])}, after "
        f"{', '.join(f'{x:.1f}' for x in env.get('load_after', ()))} (a shared machine: "
        "other jobs ran at the same time)",
        f"- versions: Python {env['python']}, "
        + ", ".join(f"{k} {v}" for k, v in env["versions"].items())
        + f"; git {env['git']} on {env['branch']}",
        f"- run: {setup['duration_s']:.0f} s of Poisson arrivals a run, stragglers waited for "
        f"{setup['tail_s']:.0f} s, seed {setup['seed']}; engines {fresh} between policies; "
        f"wall time {env.get('wall_seconds')} s",
        "- command: `python -m benchmarks.routing.run"
        + (" --quick`" if setup["duration_s"] <= 6 else "`"),
        "",
        "Every request is streamed. TTFT is the time to the first content chunk at the "
        "client; `*` marks a p99 that includes requests still waiting for their first token "
        "when the run was cut off (counted with their waiting time: a lower bound). "
        "`failed` counts requests without a complete answer; `pre-stream` those that failed "
        "before the first event. `done/s` is completed requests over the time from the first "
        "arrival to the last completion; `tok/s` counts content tokens delivered while "
        "arrivals ran, over that time (the throughput the targets use). `cache hit` is the "
        "share of prompt tokens the engines' prefix caches served.",
        "",
        "## Workloads",
        "",
    ]
    for name, w in setup["workloads"].items():
        engines = "; ".join(
            f"{e['site']}/{e['name']} {e['slots']} slots, prefill {e['prefill_ms_per_token']} "
            f"ms/token, decode {e['decode_ms_per_token']} ms/token, models "
            f"{','.join(e['models'])}"
            for e in w["engines"]
        )
        out.append(
            f"- **{name}**: {w['description']}. Offered load {100 * w['load']:.0f} % of "
            f"{w['capacity_rps']} req/s (capacity without cache hits). Engines: {engines}."
        )
    out += [
        "",
        "## Results",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
    ]
    out += ["| " + " | ".join(row) + " |" for row in _rows(runs)]
    out += ["", "## Targets (for the `score` policy)", ""]
    out += [f"- {line}" for line in targets["lines"]] or ["- (not enough runs for a verdict)"]
    return "\n".join(out) + "\n"
