"""Checking a chain against the checkpoints partners signed: a pure decision.

The chain is given as its entries' hashes in order (already checked link by link by
:mod:`verbund.audit`). Each checkpoint says "entry #index had hash H". Three ways a
history can disagree with what partners saw, told apart here:

- **truncated**: the chain is shorter than a checkpoint's index, and agrees with every
  checkpoint it still covers (its newest entries were deleted);
- **forked**: two partners' checkpoints cannot lie on one chain (same index, different
  hashes; or the chain agrees with a later checkpoint but not an earlier one) — different
  partners were shown different histories;
- **rewritten**: the checkpoints agree with each other but the chain contradicts them
  (entries changed and every hash after them recomputed).

The first entry that disagrees is the one after the newest checkpoint the chain still
agrees with (exact when checkpoints are taken at that entry; otherwise the first entry
after which the disagreement can have started). Checkpoints whose signature does not
verify with a known partner key are set aside and listed, never trusted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from verbund.trust._checkpoint import Checkpoint
from verbund.trust._keys import PartnerKeys

__all__ = ["Verdict", "check_against_checkpoints"]

Problem = Literal["", "broken", "truncated", "rewritten", "forked"]


@dataclass(frozen=True, slots=True)
class Verdict:
    ok: bool
    entries: int
    checked: int  # checkpoints that verified and were compared
    problem: Problem = ""
    first_disagreeing: int | None = None  # position, 1-based
    contradicts: Checkpoint | None = None  # the checkpoint the chain contradicts
    other: Checkpoint | None = None  # for a fork: the partner's checkpoint the chain follows
    rejected: list[Checkpoint] = field(default_factory=list)  # bad signature or unknown signer
    detail: str = ""  # for a broken chain: how the entry fails its link

    @classmethod
    def broken(cls, entries: int, first: int | None, detail: str) -> Verdict:
        """A chain whose links do not hold (``verbund.audit``): no checkpoint is needed."""
        return cls(False, entries, 0, "broken", first, detail=detail)

    def describe(self) -> str:
        if self.ok:
            return f"{self.entries} entries agree with {self.checked} signed checkpoints"
        if self.problem == "broken":
            return f"broken: entry #{self.first_disagreeing}: {self.detail}"
        c = self.contradicts
        assert c is not None
        where = f"entry #{self.first_disagreeing}"
        if self.problem == "truncated":
            return (
                f"{self.problem}: the chain ends at entry #{self.entries}, but {c.signer}'s "
                f"checkpoint vouches for entry #{c.index}; {where} is missing"
            )
        text = (
            f"{self.problem}: {where} is the first that disagrees; it contradicts "
            f"{c.signer}'s checkpoint of entry #{c.index} (hash {c.hash[:12]}…)"
        )
        if self.problem == "forked" and self.other is not None:
            o = self.other
            text += f", while the chain follows {o.signer}'s checkpoint of entry #{o.index}"
        return text


def check_against_checkpoints(
    hashes: Sequence[str],
    checkpoints: Sequence[Checkpoint],
    keys: PartnerKeys,
    chain: str,
) -> Verdict:
    mine = list(dict.fromkeys(c for c in checkpoints if c.chain == chain))  # copies count once
    good = [c for c in mine if c.valid(keys)]
    rejected = [c for c in mine if c not in good]
    n = len(hashes)
    agree = [c for c in good if _on_chain(c, hashes)]
    disagree = sorted((c for c in good if c.index <= n and c not in agree), key=lambda c: c.index)
    beyond = sorted((c for c in good if c.index > n), key=lambda c: c.index)

    def verdict(problem: Problem, first: int, c: Checkpoint, other: Checkpoint | None) -> Verdict:
        return Verdict(False, n, len(good), problem, first, c, other, rejected)

    fork = _fork(good)
    if fork is not None:
        a, b = fork  # a and b cannot both be on one chain; the chain follows at most one
        ours, theirs = (a, b) if _on_chain(a, hashes) else (b, a)
        first = _first_after(agree, theirs.index)
        return verdict("forked", first, theirs, ours if _on_chain(ours, hashes) else None)
    if disagree:
        c = disagree[0]
        later_agreement = [a for a in agree if a.index > c.index]
        if later_agreement:  # the chain vouches for a history c's signer never saw
            return verdict("forked", _first_after(agree, c.index), c, later_agreement[0])
        return verdict("rewritten", _first_after(agree, c.index), c, None)
    if beyond:
        return verdict("truncated", n + 1, beyond[-1], None)
    return Verdict(True, n, len(good), rejected=rejected)


def _on_chain(c: Checkpoint, hashes: Sequence[str]) -> bool:
    return c.index <= len(hashes) and (c.index == 0 or hashes[c.index - 1] == c.hash)


def _first_after(agree: Sequence[Checkpoint], index: int) -> int:
    """The entry after the newest agreeing checkpoint below ``index``."""
    return max((a.index for a in agree if a.index < index), default=0) + 1


def _fork(good: Sequence[Checkpoint]) -> tuple[Checkpoint, Checkpoint] | None:
    """Two checkpoints that name different hashes for the same entry."""
    seen: dict[int, Checkpoint] = {}
    for c in sorted(good, key=lambda c: (c.index, c.signer, c.ts)):
        prior = seen.setdefault(c.index, c)
        if prior.hash != c.hash:
            return prior, c
    return None
