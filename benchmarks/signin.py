"""What people's sign-in costs: the whole OpenID Connect flow through the real demo
provider (npm oidc-provider), and an admin call authorised by a session (a store read)
versus by an admin key (memory).

Run: PYTHONPATH=src:. python -m benchmarks.signin [--sign-ins 20] [--calls 300]
Prints a table and writes benchmarks/results/signin.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from benchmarks.report import markdown_table
from harness.idp import Idp
from harness.people import sign_in
from tests.identity.conftest import BASE, people_gateway


def summary(name: str, seconds: list[float]) -> dict[str, object]:
    ms = sorted(s * 1000 for s in seconds)
    return {
        "measure": name,
        "n": len(ms),
        "p50 ms": f"{statistics.median(ms):.1f}",
        "p90 ms": f"{ms[int(0.9 * (len(ms) - 1))]:.1f}",
        "max ms": f"{ms[-1]:.1f}",
    }


async def run(sign_ins: int, calls: int, work: Path) -> list[dict[str, object]]:
    with Idp(work / "idp", [BASE]) as idp:
        os.environ.update(idp.env())
        async with people_gateway(work, idp) as gw:
            client, person = gw.client, idp.person("grace")
            flows = []
            for _ in range(sign_ins):
                t = time.perf_counter()
                await sign_in(client, BASE, person.login, person.password)
                flows.append(time.perf_counter() - t)
            path = "/admin/usage?institution=uni-a&group_by=day"
            by_session, by_key = [], []
            for _ in range(calls):
                t = time.perf_counter()
                assert (await client.get(path)).status_code == 200
                by_session.append(time.perf_counter() - t)
                t = time.perf_counter()
                assert (await client.get(path, headers=gw.admin())).status_code == 200
                by_key.append(time.perf_counter() - t)
    return [
        summary("sign-in: /auth/login to session (real provider)", flows),
        summary("GET /admin/usage, session cookie", by_session),
        summary("GET /admin/usage, admin key", by_key),
    ]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sign-ins", type=int, default=20)
    parser.add_argument("--calls", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = asyncio.run(run(args.sign_ins, args.calls, Path(tmp)))
    table = markdown_table(rows, ["measure", "n", "p50 ms", "p90 ms", "max ms"])
    print(table)
    out = Path(__file__).parent / "results" / "signin.md"
    out.write_text(
        "# Sign-in benchmark\n\n"
        f"- date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}\n"
        f"- machine: {platform.machine()}, {os.cpu_count()} cores, load average "
        f"{os.getloadavg()[0]:.1f} (shared with other jobs)\n"
        f"- Python {platform.python_version()}, SQLite store, in-process access point\n"
        "- command: `PYTHONPATH=src:. python -m benchmarks.signin "
        f"--sign-ins {args.sign_ins} --calls {args.calls}`\n\n" + table + "\n"
    )


if __name__ == "__main__":
    main()
