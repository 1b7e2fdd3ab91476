"""A signed checkpoint: one partner's statement "the audit chain's entry #index had
this hash at this time".

Because each entry's hash covers the one before it, a checkpoint vouches for the whole
chain up to ``index`` (its position from the first entry, 1-based; not the database's
sequence number, which may have gaps). Partners keep each other's checkpoints; a history
that is later shortened, recomputed or shown differently to different partners then
contradicts one of them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import orjson

from verbund.store import CheckpointRow
from verbund.trust._keys import PartnerKeys, SigningKey

__all__ = ["Checkpoint", "sign_checkpoint"]

_DOMAIN = "verbund-audit-checkpoint-v1"


@dataclass(frozen=True, slots=True)
class Checkpoint:
    signer: str
    chain: str  # the chain's name: the access point (or store) whose log this is
    index: int
    hash: str
    ts: float
    signature: str = ""

    def message(self) -> bytes:
        """The signed bytes: a domain tag and the fields, canonical JSON."""
        body = [_DOMAIN, self.signer, self.chain, self.index, self.hash, repr(self.ts)]
        return orjson.dumps(body)

    def valid(self, keys: PartnerKeys) -> bool:
        return keys.verify(self.signer, self.message(), self.signature)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def row(self, received_at: float) -> CheckpointRow:
        """As kept in a store (the access point's, or a site agent's own copy)."""
        return CheckpointRow(received_at=received_at, **asdict(self))

    @classmethod
    def of_row(cls, r: CheckpointRow) -> Checkpoint:
        return cls(r.signer, r.chain, r.index, r.hash, r.ts, r.signature)

    @classmethod
    def from_json(cls, data: Any) -> Checkpoint:
        """Raises ValueError on anything that is not a checkpoint."""
        if not isinstance(data, dict):
            raise ValueError("a checkpoint is an object")
        try:
            cp = cls(
                signer=str(data["signer"]),
                chain=str(data["chain"]),
                index=int(data["index"]),
                hash=str(data["hash"]),
                ts=float(data["ts"]),
                signature=str(data["signature"]),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a checkpoint: {exc}") from None
        if cp.index < 0 or len(cp.hash) != 64:
            raise ValueError("not a checkpoint: index or hash out of range")
        return cp


def sign_checkpoint(key: SigningKey, chain: str, index: int, head: str, ts: float) -> Checkpoint:
    unsigned = Checkpoint(key.name, chain, index, head, ts)
    return Checkpoint(key.name, chain, index, head, ts, key.sign(unsigned.message()))
