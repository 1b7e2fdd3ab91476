"""The overhead benchmark "under attack": one institution's steady load on a Verbund access
point, first alone, then while another institution opens slowloris connections, slow
uploads, streams it never reads and greedy requests (``harness.attack``) up to the
limits. Reports the steady tenant's p50/p99 and errors side by side, and writes
``benchmarks/results/overhead-attack.md`` and ``.json``.

    python -m benchmarks.overhead.attack [--rate 200] [--duration 15] [--each 16]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.overhead import procs
from benchmarks.overhead.loadgen import GeneratorPool, Job
from benchmarks.overhead.run import RESULTS, machine, row, table
from benchmarks.overhead.servers import MODEL, STREAM_MODEL, Target, ensure_nginx, start_mock
from harness import federation as fed
from harness.attack import Attack
from harness.gateway import GatewayProcess
from harness.ports import free_port


def start_gateway(workdir: Path, backend: int) -> tuple[GatewayProcess, Target, str]:
    """One access point with a steady and an abusive institution; their keys."""
    mock = f"http://127.0.0.1:{backend}"
    config = fed.federation(
        "bench-attack",
        workdir / "verbund",
        [
            fed.site(
                "bench",
                "NW",
                [
                    fed.backend("mock", mock, [MODEL]),
                    fed.backend("mock-stream", mock + "/s", [STREAM_MODEL]),
                ],
            )
        ],
        port=free_port(),
        gateway={"home_site": "bench"},
        models=[MODEL, STREAM_MODEL],
        institutions=[fed.institution("steady", home_region="NW"), fed.institution("abuser")],
    )
    gw = GatewayProcess(config, workdir / "verbund", name="verbund").start(180)
    steady = gw.create_key("steady", "bench")["key"]
    abuser = gw.create_key("abuser", "bench")["key"]
    target = Target(
        "verbund",
        int(config["gateway"]["listen"].rpartition(":")[2]),
        "/v1/chat/completions",
        "/v1/chat/completions",
        headers=(("Authorization", f"Bearer {steady}"),),
        procs=[gw.process],
    )
    return gw, target, abuser


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=200.0, help="steady requests/s")
    parser.add_argument("--duration", type=float, default=15.0, help="seconds per run")
    parser.add_argument("--each", type=int, default=16, help="attackers of each slow kind")
    parser.add_argument("--out", default=str(RESULTS / "overhead-attack"))
    args = parser.parse_args(argv)

    workdir = Path(tempfile.mkdtemp(prefix="verbund-bench-attack-"))
    mock = start_mock(ensure_nginx(), workdir)
    gw, target, abuser = start_gateway(workdir, mock.port)
    pool = GeneratorPool(2)
    rows: list[dict[str, Any]] = []
    attacked: list[int] = []
    try:
        job = Job(
            (target.template(False), target.template(True)),
            (2.0, 1.0),
            args.duration,
            rate=args.rate,
        )
        pool.run(Job(job.templates, job.weights, 2.0, rate=50))  # warm up
        for condition in ("quiet", "under attack", "quiet again"):
            if condition == "under attack":
                host, port = gw.config["gateway"]["listen"].split(":")
                with Attack((host, int(port)), abuser, MODEL, args.each) as attack:
                    time.sleep(2.0)  # the attackers hold what they can get first
                    with procs.Meter(target.pids) as meter:
                        res = pool.run(job)
                attacked = attack.statuses
            else:
                with procs.Meter(target.pids) as meter:
                    res = pool.run(job)
            r = row(target, condition, args.rate, res, meter, job)
            rows.append(r)
            print(
                f"{condition:13} achieved {r['achieved']:7.1f}/s p50 {r['p50_ms']:.2f} ms "
                f"p99 {r['p99_ms']:.2f} ms errors {r['errors']}",
                flush=True,
            )
            time.sleep(1.0)
    finally:
        pool.close()
        gw.stop()
        mock.stop()

    refused = {str(s): attacked.count(s) for s in sorted(set(attacked))}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    info = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "rate": args.rate,
        "duration": args.duration,
        "attackers_of_each_kind": args.each,
        "greedy_client_statuses": refused,
        "rows": rows,
    }
    out.with_suffix(".json").write_text(json.dumps(info, indent=2))
    cols = [
        ("steady tenant", "mode"),
        ("answered/s", "achieved"),
        ("p50 ms", "p50_ms"),
        ("p99 ms", "p99_ms"),
        ("errors", "errors"),
        ("CPU s/1k", "cpu_s_per_1k"),
        ("load", "loadavg_1m"),
    ]
    text = (
        "# Access point under attack\n\n"
        f"`python -m benchmarks.overhead.attack --rate {args.rate:g} --duration "
        f"{args.duration:g} --each {args.each}`, {info['date']}, load average "
        f"{os.getloadavg()[0]:.2f}.\n\n"
        f"Steady tenant: {args.rate:g} requests/s to a fixed-answer nginx mock, one third "
        "streamed, open loop. The attacking tenant: "
        f"{args.each} slowloris connections, {args.each} slow uploads (a byte every 0.5 s), "
        f"{args.each} streams it never reads and one client sending `max_tokens` = 2^62 back "
        f"to back (its answers: {refused}).\n\n" + table(rows, cols) + "\n"
    )
    out.with_suffix(".md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
