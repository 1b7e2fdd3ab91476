"""The benchmark's workloads: which engines at which sites, and what requests to send.

Every workload names its engines (speeds and capacities differ on purpose), the models,
and a request generator. Offered load is a fraction of the federation's capacity,
computed from the engines' slots and per-token times with no prefix-cache hits, so every
policy faces the same arrival schedule.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from harness.simengine import EngineSpec

_WORD_TEXT = (
    "Hochschule Rechenzentrum Modell Anfrage Antwort Forschung Lehre Daten Netz Knoten "
    "Speicher Rechner Verbund Standort Nutzer Schlüssel Abrechnung Richtlinie Region Last "
    "Warteschlange Durchsatz Latenz Token Kontext Dokument Frage Zusammenfassung Beispiel"
)
WORDS = _WORD_TEXT.split()
SYSTEM = "You are the helpful assistant of a German university. Answer briefly. " * 3


def text(rng: random.Random, chars: int) -> str:
    out: list[str] = []
    n = 0
    while n < chars:
        w = rng.choice(WORDS)
        out.append(w)
        n += len(w) + 1
    return " ".join(out)[:chars]


@dataclass(frozen=True)
class SiteEngine:
    site: str
    region: str
    spec: EngineSpec


@dataclass
class Session:
    """A multi-turn chat: a long document first, then follow-up questions."""

    messages: list[dict[str, str]]
    turns_left: int
    busy: bool = False


@dataclass
class Request:
    model: str
    messages: list[dict[str, str]]
    max_tokens: int
    session: Session | None = None


@dataclass
class Workload:
    name: str
    description: str
    engines: list[SiteEngine]
    models: list[str]
    mean_prompt_tokens: float
    mean_output_tokens: float
    load: float = 0.75
    kill: str = ""  # engine to SIGKILL ...
    kill_at: float = 0.35  # ... at this fraction of the run
    sessions: list[Session] = field(default_factory=list)

    def capacity(self) -> float:
        """Requests per second all engines finish together, without prefix-cache hits."""
        total = 0.0
        for e in self.engines:
            s = e.spec
            service_ms = (
                s.prefill_ms_per_token * self.mean_prompt_tokens
                + s.decode_ms_per_token * self.mean_output_tokens
            )
            total += s.slots / (service_ms / 1000)
        return total

    def next_request(self, rng: random.Random) -> Request:
        if self.name == "prefix":
            return self._next_turn(rng)
        model = self.models[0]
        if self.name == "skewed" and rng.random() < 0.1:
            model = self.models[1]
        messages = [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": text(rng, rng.randint(400, 1200))},
        ]
        return Request(model, messages, rng.randint(16, 32))

    def _next_turn(self, rng: random.Random) -> Request:
        idle = [s for s in self.sessions if not s.busy]
        if len(self.sessions) < PREFIX_SESSIONS or not idle:
            doc = text(rng, rng.randint(2400, 4000))
            session = Session(
                [
                    {"role": "system", "content": SYSTEM},
                    {"role": "user", "content": "Summarise this document:\n" + doc},
                ],
                turns_left=rng.randint(4, 8),
            )
            self.sessions.append(session)
        else:
            session = rng.choice(idle)
            session.messages.append({"role": "user", "content": text(rng, rng.randint(80, 200))})
        session.busy = True
        session.turns_left -= 1
        return Request(self.models[0], list(session.messages), 24, session)

    def finished(self, req: Request, answer: str) -> None:
        """Record the answer in the session (the next turn sends it back)."""
        s = req.session
        if s is None:
            return
        s.busy = False
        s.messages.append({"role": "assistant", "content": answer})
        if s.turns_left <= 0 or not answer:
            self.sessions.remove(s)


PREFIX_SESSIONS = 16


def _engines(slow_prefill: float = 1.0, **over: Any) -> list[SiteEngine]:
    """Four engines at three sites: west big and fast, sued medium, ost small and slow."""
    models = over.pop("models", None)
    pm = over.pop("prefill_scale", 1.0)
    cache = over.pop("prefix_cache_tokens", 32768)

    def spec(name: str, slots: int, prefill: float, decode: float, ms: list[str]) -> EngineSpec:
        return EngineSpec(
            name,
            models=tuple(ms),
            slots=slots,
            prefill_ms_per_token=prefill * pm,
            decode_ms_per_token=decode,
            prefix_cache_tokens=cache,
        )

    m = models or {}
    return [
        SiteEngine("west", "NW", spec("west-1", 8, 0.8, 40.0, m.get("west-1", ["llm"]))),
        SiteEngine("west", "NW", spec("west-2", 4, 0.8, 40.0, m.get("west-2", ["llm"]))),
        SiteEngine("sued", "BY", spec("sued-1", 6, 1.2, 60.0, m.get("sued-1", ["llm"]))),
        SiteEngine(
            "ost",
            "SN",
            spec("ost-1", 4, 3.0 * slow_prefill, 120.0, m.get("ost-1", ["llm"])),
        ),
    ]


def workloads() -> dict[str, Workload]:
    skewed_models = {
        "west-1": ["hot", "cold"],
        "west-2": ["hot"],
        "sued-1": ["hot"],
        "ost-1": ["hot"],
    }
    return {
        "uniform": Workload(
            "uniform",
            "one model everywhere; prompts 100-300 tokens, answers 16-32 tokens",
            _engines(),
            ["llm"],
            mean_prompt_tokens=200,
            mean_output_tokens=24,
        ),
        "skewed": Workload(
            "skewed",
            "hot model (90 %) at all sites, cold model (10 %) at west-1 only; "
            "prefill at ost 3x slower still (9 ms/token)",
            _engines(slow_prefill=3.0, models=skewed_models),
            ["hot", "cold"],
            mean_prompt_tokens=200,
            mean_output_tokens=24,
        ),
        "prefix": Workload(
            "prefix",
            f"{PREFIX_SESSIONS} multi-turn chats at a time over 600-1000-token documents, "
            "4-8 turns each; prefill 1.25x dearer; prefix caches of 12k tokens",
            _engines(prefill_scale=1.25, prefix_cache_tokens=12288),
            ["llm"],
            mean_prompt_tokens=1000,
            mean_output_tokens=24,
        ),
        "kill": Workload(
            "kill",
            "uniform at 70 % load; engine sued-1 is SIGKILLed at 35 % of the run",
            _engines(),
            ["llm"],
            mean_prompt_tokens=200,
            mean_output_tokens=24,
            load=0.7,
            kill="sued-1",
        ),
    }
