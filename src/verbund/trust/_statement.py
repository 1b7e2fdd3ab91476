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
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from verbund.trust._keys import PartnerKeys, SigningKey

__all__ = ["ENGINE", "Countersigned", "UsageStatement", "countersign", "sign_statement"]

_DOMAIN = "verbund-usage-statement-v1"
_COUNTS = ("requests", "prompt_tokens", "completion_tokens")
# node time (jobs' and on-demand instances' CPU and GPU seconds): in a line, and in the
# signed bytes, only when not zero, so statements without node time read as before
_SECONDS = ("cpu_seconds", "gpu_seconds")


# A line under institution ENGINE holds what the site's engines counted for a model (their
# own Prometheus token counters), all institutions together: the engine cannot tell them
# apart. Its ``requests`` is 0 (engines count requests differently; tokens are compared).
# With "unmetered": true (in a line, and in the signed bytes, only when true) the site
# states that no engine of the model exposes token counters: nothing to compare.
ENGINE = "*"
_NODE_TOLERANCE = 0.01  # seconds: both sides round their sums to milliseconds


def _signed_line(ln: Mapping[str, Any]) -> dict[str, Any]:
    out = {k: ln[k] for k in ("institution", "model", *_COUNTS)}
    for k in _SECONDS:
        seconds = round(float(ln.get(k) or 0.0), 3)
        if seconds:
            out[k] = seconds
    if ln.get("unmetered"):
        out["unmetered"] = True
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
                        "unmetered": ln.get("unmetered") is True,
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
    # node time the sites state, each with what the access points recorded for it
    # (``recorded``: jobs' CPU and GPU seconds), or ``recorded`` None for on-demand
    # instances (institution ""), which only the site measures: stated, no counterpart
    node_time: list[dict[str, Any]] = field(default_factory=list)
    node_differences: list[dict[str, Any]] = field(default_factory=list)
    # per site and model: the site's engines' own token counters (institution ENGINE)
    # beside the access points' records of every institution at that site and model
    engine: list[dict[str, Any]] = field(default_factory=list)
    engine_differences: list[dict[str, Any]] = field(default_factory=list)
    direct: list[str] = field(default_factory=list)  # sites whose agent sees no request

    @property
    def differs(self) -> bool:
        return bool(self.differences or self.node_differences or self.engine_differences)


def countersign(
    settlement: Mapping[str, Any],
    statements: Sequence[UsageStatement],
    keys: PartnerKeys,
    direct: Collection[str] = (),
) -> Countersigned:
    """Compare the settlement with the sites' signed statements for the same month.

    - ``usage`` (institution x site, from the access points' records) with the
      statements' lines per institution: a difference per site and institution with both
      figures, ``recorded`` (access points) beside ``stated`` (the site's statement);
    - ``node_time`` (jobs' CPU and GPU seconds the access points recorded) with the
      statements' node time per institution and model (on-demand instances' seconds
      have no counterpart: listed as stated);
    - ``by_model`` (site x model, all institutions) with the lines the site's engines
      counted (institution :data:`ENGINE`): prompt and completion tokens.

    Sites in ``direct`` are reached without their agent (``ingress = "direct"``): their
    agent sees no request, so their figures per institution are not compared (listed in
    ``direct``); their engines' counters per model and their jobs' node time are."""
    month = settlement["month"]
    good = [s for s in statements if s.month == month and s.valid(keys)]
    recorded_nodes = list(settlement.get("node_time", []))
    out = Countersigned(
        sha256=hashlib.sha256(
            orjson.dumps(
                [
                    settlement["inputs"]["sha256"],
                    sorted(s.signature for s in good),
                    *([recorded_nodes] if recorded_nodes else []),
                ]
            )
        ).hexdigest(),
        statements=sorted(s.site for s in good),
        rejected=sorted(s.site for s in statements if s not in good),
    )
    covered = {s.site for s in good}
    out.direct = sorted(covered & set(direct))
    stated: dict[tuple[str, str], dict[str, int]] = defaultdict(lambda: dict.fromkeys(_COUNTS, 0))
    for s in good:
        for ln in s.lines:
            if ln["institution"] != ENGINE:
                for k in _COUNTS:
                    stated[(s.site, ln["institution"])][k] += int(ln[k])
    recorded: dict[tuple[str, str], dict[str, int]] = defaultdict(lambda: dict.fromkeys(_COUNTS, 0))
    for row in settlement["usage"]:
        if row["site"] in covered:
            for k in _COUNTS:
                recorded[(row["site"], row["institution"])][k] += int(row[k])
    for site, inst in sorted({*stated, *recorded}):
        a, b = recorded[(site, inst)], stated[(site, inst)]
        if a != b and site not in out.direct:
            out.differences.append(
                {
                    "site": site,
                    "institution": inst,
                    "recorded": a,
                    "stated": b,
                    "missing_requests": b["requests"] - a["requests"],
                }
            )
    _node_time(out, good, recorded_nodes, covered)
    _engine(out, good, settlement.get("by_model", []))
    return out


def _seconds(ln: Mapping[str, Any]) -> dict[str, float]:
    return {k: round(float(ln.get(k) or 0.0), 3) for k in _SECONDS}


def _node_time(
    out: Countersigned,
    good: Sequence[UsageStatement],
    recorded_rows: Sequence[Mapping[str, Any]],
    covered: set[str],
) -> None:
    recorded = {
        (r["site"], r["institution"], r["model"]): _seconds(r)
        for r in recorded_rows
        if r["site"] in covered
    }
    stated: dict[tuple[str, str, str], dict[str, float]] = {}
    for s in good:
        for ln in s.lines:
            if not any(ln.get(k) for k in _SECONDS):
                continue
            key = (s.site, ln["institution"], ln["model"])
            shared = ln["institution"] == ""  # on-demand: only the site measures it
            if not shared:
                stated[key] = _seconds(ln)
            out.node_time.append(
                {"site": s.site, "institution": ln["institution"], "model": ln["model"]}
                | _seconds(ln)
                | {"recorded": None if shared else recorded.get(key, dict.fromkeys(_SECONDS, 0.0))}
            )
    zero = dict.fromkeys(_SECONDS, 0.0)
    for site, inst, model in sorted({*stated, *recorded}):
        a, b = recorded.get((site, inst, model), zero), stated.get((site, inst, model), zero)
        if any(abs(a[k] - b[k]) > _NODE_TOLERANCE for k in _SECONDS):
            out.node_differences.append(
                {"site": site, "institution": inst, "model": model, "recorded": a, "stated": b}
            )


def _engine(
    out: Countersigned, good: Sequence[UsageStatement], by_model: Sequence[Mapping[str, Any]]
) -> None:
    tokens = ("prompt_tokens", "completion_tokens")
    recorded = {(r["site"], r["model"]): {k: int(r[k]) for k in tokens} for r in by_model}
    for s in good:
        for ln in s.lines:
            if ln["institution"] != ENGINE:
                continue
            key = (s.site, ln["model"])
            a = recorded.get(key, dict.fromkeys(tokens, 0))
            entry = {"site": s.site, "model": ln["model"], "recorded": a}
            if ln.get("unmetered"):
                out.engine.append(entry | {"stated": None})  # nothing to compare with
                continue
            b = {k: int(ln[k]) for k in tokens}
            out.engine.append(entry | {"stated": b})
            if a != b:
                out.engine_differences.append(entry | {"stated": b})
