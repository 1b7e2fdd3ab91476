"""Monthly settlement between partner sites, computed from usage records and price lists.

A pure function: the same usage lines, sites and institutions give the same statement,
byte for byte (inputs are merged and sorted; ``inputs.sha256`` fingerprints them so two
partners can check they settled the same thing). Money is :class:`~decimal.Decimal`
throughout and rounded to cents, half up, only when a figure is written out, so a total
can differ from the sum of its rounded parts by a cent.

The statement has four parts:

* ``usage``: what each institution used at each site (requests, tokens, cost);
* ``delivered``: what each site delivered to members of other regions;
* ``balances``: for each pair of partner sites A < B, the value A delivered to B's
  institutions minus the value B delivered to A's (positive: B owes A);
* ``sites``: per site, all it delivered, what it delivered to other partners'
  institutions, what its own institutions used at other partners, and the net.

An institution's partner site is its ``partner_site``, else the only site in its home
region; institutions with neither appear in ``usage`` and ``delivered`` but in no
balance (listed in ``unassigned``).
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import orjson

from verbund.accounting._lines import UsageLine
from verbund.accounting._period import iso_utc, parse_month
from verbund.accounting._prices import ZERO, PriceBook, money
from verbund.config import InstitutionConfig, SiteConfig, partner_site_of


@dataclass
class _Sum:
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    value: Decimal = ZERO

    def add(self, line: UsageLine, value: Decimal) -> None:
        self.requests += line.requests
        self.prompt_tokens += line.prompt_tokens
        self.completion_tokens += line.completion_tokens
        self.value += value

    def out(self, value_name: str) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            value_name: str(money(self.value)),
        }


def merge_lines(lines: Iterable[UsageLine]) -> list[UsageLine]:
    """One line per (institution, site, model, endpoint), sorted."""
    merged: dict[tuple[str, str, str, str], UsageLine] = {}
    for ln in lines:
        prev = merged.get(ln.key)
        if prev is not None:
            ln = UsageLine(
                *ln.key,
                requests=prev.requests + ln.requests,
                prompt_tokens=prev.prompt_tokens + ln.prompt_tokens,
                completion_tokens=prev.completion_tokens + ln.completion_tokens,
                gpu_seconds=prev.gpu_seconds + ln.gpu_seconds,
                cpu_seconds=prev.cpu_seconds + ln.cpu_seconds,
            )
        merged[ln.key] = ln
    return [merged[k] for k in sorted(merged)]


def per_model(lines: Iterable[UsageLine]) -> list[dict[str, Any]]:
    """Requests and tokens per site and model, all institutions together: what a site
    that cannot tell institutions apart (an engine's own counters) can countersign."""
    sums: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0])
    for ln in lines:
        acc = sums[(ln.site, ln.model)]
        acc[0] += ln.requests
        acc[1] += ln.prompt_tokens
        acc[2] += ln.completion_tokens
    return [
        {"site": site, "model": model, "requests": n, "prompt_tokens": p, "completion_tokens": c}
        for (site, model), (n, p, c) in sorted(sums.items())
    ]


def _fingerprint(
    lines: list[UsageLine], sites: list[SiteConfig], partners: dict[str, str | None]
) -> str:
    data = {
        "lines": [
            [
                *ln.key,
                ln.requests,
                ln.prompt_tokens,
                ln.completion_tokens,
                ln.gpu_seconds,
                ln.cpu_seconds,
            ]
            for ln in lines
        ],
        "prices": {
            s.name: s.prices.model_dump(mode="json") if s.prices else None
            for s in sorted(sites, key=lambda s: s.name)
        },
        "partners": partners,
    }
    return hashlib.sha256(orjson.dumps(data, option=orjson.OPT_SORT_KEYS)).hexdigest()


def settle(
    month: str,
    lines: Iterable[UsageLine],
    sites: list[SiteConfig],
    institutions: list[InstitutionConfig],
) -> dict[str, Any]:
    """The statement for ``month`` (``YYYY-MM``) as JSON-ready data; money as strings."""
    start, end = parse_month(month)
    book = PriceBook(sites)
    merged = merge_lines(lines)
    site_region = {s.name: s.region for s in sites}
    by_id = {i.id: i for i in institutions}
    used = {ln.institution for ln in merged}
    region = {i: by_id[i].home_region if i in by_id else "" for i in used}
    partner = {i: partner_site_of(by_id[i], sites) if i in by_id else None for i in used}

    usage: dict[tuple[str, str], _Sum] = defaultdict(_Sum)
    delivered: dict[tuple[str, str], _Sum] = defaultdict(_Sum)
    flows: dict[tuple[str, str], Decimal] = defaultdict(Decimal)  # (from site, to partner)
    site_total: dict[str, Decimal] = defaultdict(Decimal)
    for ln in merged:
        value = book.cost(
            ln.site,
            ln.model,
            requests=ln.requests,
            prompt_tokens=ln.prompt_tokens,
            completion_tokens=ln.completion_tokens,
            gpu_seconds=ln.gpu_seconds,
            cpu_seconds=ln.cpu_seconds,
        )
        usage[(ln.institution, ln.site)].add(ln, value)
        site_total[ln.site] += value
        if region[ln.institution] != site_region.get(ln.site, ""):
            delivered[(ln.site, region[ln.institution])].add(ln, value)
        home = partner[ln.institution]
        if home is not None and home != ln.site:
            flows[(ln.site, home)] += value

    pairs = sorted({tuple(sorted(k)) for k in flows})
    balances = []
    for a, b in pairs:
        a_to_b, b_to_a = flows.get((a, b), ZERO), flows.get((b, a), ZERO)
        net = a_to_b - b_to_a
        balances.append(
            {
                "site_a": a,
                "site_b": b,
                "a_to_b": str(money(a_to_b)),
                "b_to_a": str(money(b_to_a)),
                "net": str(money(net)),
                "payer": b if net > 0 else a if net < 0 else None,
                "payee": a if net > 0 else b if net < 0 else None,
                "amount": str(money(abs(net))),
            }
        )
    site_names = sorted({*site_total, *(s for k in flows for s in k)})
    per_site = []
    for s in site_names:
        out = sum((v for (f, _), v in flows.items() if f == s), ZERO)
        inn = sum((v for (_, t), v in flows.items() if t == s), ZERO)
        per_site.append(
            {
                "site": s,
                "delivered": str(money(site_total.get(s, ZERO))),
                "to_other_partners": str(money(out)),
                "from_other_partners": str(money(inn)),
                "net": str(money(out - inn)),
            }
        )
    return {
        "month": month,
        "currency": book.currency,
        "period": {"from": iso_utc(start), "until": iso_utc(end)},
        "inputs": {
            "lines": len(merged),
            "requests": sum(ln.requests for ln in merged),
            "sha256": _fingerprint(merged, sites, dict(sorted(partner.items()))),
        },
        "usage": [
            {
                "institution": inst,
                "home_region": region[inst],
                "partner_site": partner[inst],
                "site": site,
                **s.out("cost"),
            }
            for (inst, site), s in sorted(usage.items())
        ],
        "delivered": [
            {"site": site, "site_region": site_region.get(site, ""), "to_region": reg}
            | s.out("value")
            for (site, reg), s in sorted(delivered.items())
        ],
        "balances": balances,
        "sites": per_site,
        "by_model": per_model(merged),
        "unassigned": sorted(i for i, p in partner.items() if p is None),
    }
