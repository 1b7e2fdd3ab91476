"""The Grafana dashboard is valid JSON and charts every metric the access point exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

DASHBOARD = Path(__file__).parent.parent / "deploy" / "grafana" / "verbund.json"

METRICS = {
    "verbund_requests_total": {"site", "status"},
    "verbund_request_duration_seconds_bucket": {"model"},
    "verbund_ttft_seconds_bucket": {"site"},
    "verbund_tokens_total": {"site", "kind"},
    "verbund_retries_total": set(),
    "verbund_ejections_total": {"backend"},
    "verbund_backend_up": {"site", "backend"},
    "verbund_site_state": {"site", "state"},
    "verbund_in_flight": {"site"},
}


def test_dashboard_charts_every_metric() -> None:
    dash = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    for metric, labels in METRICS.items():
        using = [e for e in exprs if re.search(rf"\b{metric}\b", e)]
        assert using, f"no panel uses {metric}"
        grouped = {
            lab
            for e in using
            for m in re.finditer(r"by \(([^)]*)\)", e)
            for lab in m.group(1).split(", ")
        }
        assert labels <= grouped, (metric, labels - grouped)
    assert any("histogram_quantile(0.99" in e for e in exprs)
    assert any("histogram_quantile(0.5" in e for e in exprs)
    for e in exprs:
        assert e.count("(") == e.count(")"), e
