"""The checkpoints an access point holds: its own, signed at intervals and on demand,
and its partners', received through the admin API."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from sqlalchemy import select

from verbund.audit import GENESIS, AuditLog
from verbund.errors import ApiError, BadRequest, Conflict
from verbund.store import CheckpointRow, Store
from verbund.trust._checkpoint import Checkpoint, sign_checkpoint
from verbund.trust._keys import PartnerKeys, SigningKey
from verbund.trust._verify import Verdict, check_against_checkpoints

__all__ = ["CheckpointBook", "SiteSigner"]

# asks one site's agent to sign (chain, index, head); answers the checkpoint's JSON
SiteSigner = Callable[[str, int, str], Awaitable[Mapping[str, Any]]]

log = logging.getLogger("verbund.trust")


class CheckpointBook:
    def __init__(
        self,
        store: Store,
        audit: AuditLog,
        keys: PartnerKeys,
        chain: str,
        signing: SigningKey | None,
        interval: float,
    ) -> None:
        self._store = store
        self._audit = audit
        self.keys = keys
        self.chain = chain
        self._signing = signing
        self._interval = interval
        # the sites' agents that sign heads with their own keys (set by the access point)
        self.site_signers: dict[str, SiteSigner] = {}

    @property
    def signer(self) -> str | None:
        return self._signing.name if self._signing else None

    async def held(self) -> list[Checkpoint]:
        async with self._store.session() as s:
            rows = await s.execute(
                select(CheckpointRow)
                .where(CheckpointRow.chain == self.chain)
                .order_by(CheckpointRow.index, CheckpointRow.signer)
            )
            return [Checkpoint.of_row(r) for r in rows.scalars()]

    async def verify(self, extra: Iterable[Checkpoint] = ()) -> Verdict:
        """The chain, link by link and against the held checkpoints (and ``extra`` a
        caller brings)."""
        return (await self._check(extra))[0]

    async def _check(self, extra: Iterable[Checkpoint] = ()) -> tuple[Verdict, list[str]]:
        """The verdict and the chain's hashes, from one read of the chain."""
        linked, hashes = await self._audit.linked_hashes()
        if not linked.ok:
            verdict = Verdict.broken(linked.entries, linked.first_broken, linked.reason)
        else:
            held = [*await self.held(), *extra]
            verdict = check_against_checkpoints(hashes, held, self.keys, self.chain)
        return verdict, hashes

    async def sign_head(self) -> Checkpoint:
        """Sign the chain's head now, if it agrees with every checkpoint held: a
        partner never vouches for a history that contradicts what it saw."""
        if self._signing is None:
            raise Conflict("this access point has no signing key (trust.signing_key_file)")
        return await self._sign(self._signing, *await self._check())

    async def _sign(self, key: SigningKey, verdict: Verdict, hashes: list[str]) -> Checkpoint:
        if not verdict.ok:
            raise Conflict(f"not signing: {verdict.describe()}")
        head = hashes[-1] if hashes else GENESIS
        cp = sign_checkpoint(key, self.chain, len(hashes), head, time.time())
        await self.receive([cp])
        return cp

    async def sign_at_sites(self) -> dict[str, str]:
        """Ask every site agent whose key is known here to sign the chain's head, and
        keep what they sign: each site keeps its own copy too, outside this store, and
        refuses a head that contradicts one it signed before. Only a chain that agrees
        with every checkpoint held here is offered. Per site: what became of it."""
        verdict, hashes = await self._check()
        if not verdict.ok:
            raise Conflict(f"not asking the sites to sign: {verdict.describe()}")
        head = hashes[-1] if hashes else GENESIS
        out: dict[str, str] = {}
        for site, ask in sorted(self.site_signers.items()):
            if not self.keys.known(site):
                out[site] = "no signing key known for the site"
                continue
            try:
                cp = Checkpoint.from_json(dict(await ask(self.chain, len(hashes), head)))
                await self.receive([cp])
            except ApiError as exc:
                out[site] = f"refused: {exc.message}"
                log.error("site %s did not sign the audit chain's head: %s", site, exc.message)
                continue
            except ValueError as exc:
                out[site] = f"refused: {exc}"
                continue
            out[site] = f"signed entry #{cp.index}"
        return out

    async def receive(self, checkpoints: Iterable[Checkpoint]) -> int:
        """Keep checkpoints that a known partner signed; 400 for any other. Returns how
        many were new. The same partner signing two hashes for one entry is kept as
        the first one and refused (409): that partner contradicts itself."""
        new = 0
        async with self._store.session() as s, s.begin():
            for cp in checkpoints:
                if cp.chain != self.chain:
                    raise BadRequest(f"checkpoint of another chain ({cp.chain!r})", param="chain")
                if not self.keys.known(cp.signer):
                    raise BadRequest(f"unknown signer {cp.signer!r}", param="signer")
                if not cp.valid(self.keys):
                    raise BadRequest(f"bad signature from {cp.signer!r}", param="signature")
                held = await s.get(CheckpointRow, (cp.signer, cp.chain, cp.index))
                if held is not None:
                    if held.hash != cp.hash:
                        raise Conflict(
                            f"{cp.signer} signed another hash for entry #{cp.index} before"
                        )
                    continue
                s.add(cp.row(time.time()))
                new += 1
        return new

    async def run(self) -> None:
        """Sign the head every ``interval`` seconds when it moved, and ask the sites'
        agents to sign it too (a background task)."""
        signing = self._signing
        if (signing is None and not self.site_signers) or self._interval <= 0:
            return
        last = -1
        while True:
            await asyncio.sleep(self._interval)
            try:
                verdict, hashes = await self._check()
                if len(hashes) != last:
                    if signing is not None:
                        await self._sign(signing, verdict, hashes)
                    if self.site_signers:
                        await self.sign_at_sites()
                    last = len(hashes)
            except Conflict as exc:  # the chain contradicts a checkpoint: say so, loudly
                log.error("audit checkpoint refused: %s", exc)
            except Exception:
                log.exception("audit checkpoint failed")
