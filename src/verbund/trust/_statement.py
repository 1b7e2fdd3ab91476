"""Countersigned usage: a site's signed statement of what it served in a month, and
the cross-check of the access points' records against it.

A site meters what it served (per institution and model: requests and tokens) and signs
the month's totals with its own key. Settlement otherwise rests on the access points'
records alone; with the sites' statements beside them, a partner whose access point
under-reports its institutions' usage shows up as a difference, per site and
institution, that names the statement it contradicts.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from verbund.trust._keys import PartnerKeys, SigningKey

__all__ = ["Countersigned", "UsageStatement", "countersign", "sign_statement"]

_DOMAIN = "verbund-usage-statement-v1"
_COUNTS = ("requests", "prompt_tokens", "completion_tokens")
# node time (jobs' and on-demand instances' CPU and GPU seconds): in a line, and in the
# signed bytes, only when not zero, so statements without node time read as before
_SECONDS = ("cpu_seconds", "gpu_seconds")


def _signed_line(ln: Mapping[str, Any]) -> dict[str, Any]:
    out = {k: ln[k] for k in ("institution", "model", *_COUNTS)}
    for k in _SECONDS:
        seconds = round(float(ln.get(k) or 0.0), 3)
        if seconds:
            out[k] = seconds
    return out


@dataclass(frozen=True)
class UsageStatement:
    site: str
    month: str  # YYYY-MM (UTC)
    # one line per institution and model: {"institution", "model", "requests",
    # "prompt_tokens", "completion_tokens"} and, where not zero, "cpu_seconds" and
    # "gpu_seconds" (node time; institution "" for on-demand instances, shared by all)
    lines: tuple[Mapping[str, Any], ...]
    ts: float
    signature: str = ""

    def message(self) -> bytes:
        lines = sorted(
            (_signed_line(ln) for ln in self.lines),
            key=lambda ln: (ln["institution"], ln["model"]),
        )
        return orjson.dumps(
            [_DOMAIN, self.site, self.month, lines, repr(self.ts)], option=orjson.OPT_SORT_KEYS
        )

    def valid(self, keys: PartnerKeys) -> bool:
        return keys.verify(self.site, self.message(), self.signature)

    def to_json(self) -> dict[str, Any]:
        return {
            "site": self.site,
            "month": self.month,
            "lines": [_signed_line(ln) for ln in self.lines],
            "ts": self.ts,
            "signature": self.signature,
        }

    @classmethod
    def from_json(cls, data: Any) -> UsageStatement:
        try:
            lines = tuple(
                _signed_line(
                    {
                        "institution": str(ln["institution"]),
                        "model": str(ln["model"]),
                        **{k: int(ln[k]) for k in _COUNTS},
                        **{k: float(ln.get(k) or 0.0) for k in _SECONDS},
                    }
                )
                for ln in data["lines"]
            )
            return cls(
                str(data["site"]),
                str(data["month"]),
                lines,
                float(data["ts"]),
                str(data["signature"]),
            )
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a usage statement: {type(exc).__name__}") from None


def sign_statement(
    key: SigningKey, month: str, lines: Iterable[Mapping[str, Any]], ts: float
) -> UsageStatement:
    unsigned = UsageStatement(key.name, month, tuple(lines), ts)
    return UsageStatement(key.name, month, unsigned.lines, ts, key.sign(unsigned.message()))


@dataclass
class Countersigned:
    sha256: str  # covers the access points' inputs and every statement checked
    statements: list[str] = field(default_factory=list)  # sites whose statements verified
    rejected: list[str] = field(default_factory=list)  # sites whose statements did not
    differences: list[dict[str, Any]] = field(default_factory=list)
    # node time the sites state (signed; the access points' job records carry CPU and
    # GPU seconds too, but settlement does not sum them: stated, not cross-checked)
    node_time: list[dict[str, Any]] = field(default_factory=list)


def countersign(
    settlement: Mapping[str, Any], statements: Sequence[UsageStatement], keys: PartnerKeys
) -> Countersigned:
    """Compare the settlement's ``usage`` (institution x site, from the access points'
    records) with the sites' signed statements for the same month. A difference is
    reported per site and institution with both figures: ``recorded`` (access points)
    beside ``stated`` (the site's signed statement)."""
    month = settlement["month"]
    good = [s for s in statements if s.month == month and s.valid(keys)]
    out = Countersigned(
        sha256=hashlib.sha256(
            orjson.dumps([settlement["inputs"]["sha256"], sorted(s.signature for s in good)])
        ).hexdigest(),
        statements=sorted(s.site for s in good),
        rejected=sorted(s.site for s in statements if s not in good),
    )
    stated: dict[tuple[str, str], dict[str, int]] = defaultdict(lambda: dict.fromkeys(_COUNTS, 0))
    for s in good:
        for ln in s.lines:
            for k in _COUNTS:
                stated[(s.site, ln["institution"])][k] += int(ln[k])
    recorded: dict[tuple[str, str], dict[str, int]] = defaultdict(lambda: dict.fromkeys(_COUNTS, 0))
    for s in good:
        for ln in s.lines:
            if any(ln.get(k) for k in _SECONDS):
                out.node_time.append(
                    {"site": s.site, "institution": ln["institution"], "model": ln["model"]}
                    | {k: float(ln.get(k) or 0.0) for k in _SECONDS}
                )
    covered = {s.site for s in good}
    for row in settlement["usage"]:
        if row["site"] in covered:
            for k in _COUNTS:
                recorded[(row["site"], row["institution"])][k] += int(row[k])
    for site, inst in sorted({*stated, *recorded}):
        a, b = recorded[(site, inst)], stated[(site, inst)]
        if a != b:
            out.differences.append(
                {
                    "site": site,
                    "institution": inst,
                    "recorded": a,
                    "stated": b,
                    "missing_requests": b["requests"] - a["requests"],
                }
            )
    return out
