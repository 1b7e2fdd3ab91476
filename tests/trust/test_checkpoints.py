"""Checkpoints exchanged between partners catch a truncated, a rewritten and a forked
chain, and name the first entry that disagrees and whose checkpoint it contradicts."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import select

from harness.services import Postgres
from tests.trust.chain import append, keyring, partner, rewrite, truncate
from verbund.audit import AuditLog
from verbund.errors import BadRequest, Conflict
from verbund.store import AuditRow, Store
from verbund.trust import Checkpoint, CheckpointBook, sign_checkpoint

CHAIN = "federation"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.real)])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'c.db'}"
    else:
        pg: Postgres = request.getfixturevalue("pg")
        url = pg.url
    s = Store(url)
    await s.migrate()
    yield s
    await s.aclose()


WEST, EAST, SITE = partner("ap-west"), partner("ap-east"), partner("rz-south")
KEYS = keyring(WEST, EAST, SITE)


def books(store: Store) -> tuple[AuditLog, CheckpointBook]:
    """The chain, and the book of the access point ap-west that signs it."""
    audit = AuditLog(store)
    return audit, CheckpointBook(store, audit, KEYS, CHAIN, WEST, 0)


async def site_signs(audit: AuditLog, signer: str = "rz-south") -> Checkpoint:
    """A partner fetches the head (GET /admin/audit) and signs it with its own key."""
    _, hashes = await audit.linked_hashes()
    key = {"rz-south": SITE, "ap-east": EAST}[signer]
    return sign_checkpoint(key, CHAIN, len(hashes), hashes[-1], time.time())


async def test_an_honest_chain_agrees_with_every_checkpoint(store: Store) -> None:
    audit, book = books(store)
    await append(store, audit, 3)
    await book.sign_head()
    await append(store, audit, 2)
    await book.receive([await site_signs(audit)])
    await book.sign_head()
    verdict = await book.verify()
    assert verdict.ok, verdict.describe()
    assert (verdict.entries, verdict.checked) == (5, 3)


async def test_deleting_the_newest_entries_is_named(store: Store) -> None:
    audit, book = books(store)
    await append(store, audit, 5)
    await book.receive([await site_signs(audit)])
    await truncate(store, 3)
    assert (await audit.verify()).ok  # the links alone cannot tell
    verdict = await book.verify()
    assert (verdict.ok, verdict.problem, verdict.first_disagreeing) == (False, "truncated", 4)
    assert verdict.contradicts is not None and verdict.contradicts.signer == "rz-south"
    assert "entry #4 is missing" in verdict.describe()
    with pytest.raises(Conflict):  # the access point refuses to vouch for it
        await book.sign_head()


async def test_a_broken_link_is_named_and_never_signed(store: Store) -> None:
    audit, book = books(store)
    await append(store, audit, 4)
    async with store.session() as s, s.begin():  # entry #3 changed, no hash recomputed
        third = (await s.execute(select(AuditRow).order_by(AuditRow.seq))).scalars().all()[2]
        third.target = "key_forged"
    verdict = await book.verify()
    assert (verdict.ok, verdict.problem, verdict.first_disagreeing) == (False, "broken", third.seq)
    assert "entry was changed" in verdict.describe()
    with pytest.raises(Conflict, match="broken"):
        await book.sign_head()
    assert await book.held() == []


async def test_a_rewritten_chain_with_recomputed_hashes_is_named(store: Store) -> None:
    audit, book = books(store)
    await append(store, audit, 3)
    await book.sign_head()  # ap-west at #3
    await append(store, audit, 3)
    await book.receive([await site_signs(audit)])  # rz-south at #6
    await rewrite(store, 5, "key_forged")
    assert (await audit.verify()).ok  # every link recomputed
    verdict = await book.verify()
    assert (verdict.problem, verdict.first_disagreeing) == ("rewritten", 4)
    assert verdict.contradicts is not None
    assert (verdict.contradicts.signer, verdict.contradicts.index) == ("rz-south", 6)


async def test_with_a_checkpoint_at_every_entry_the_first_changed_entry_is_exact(
    store: Store,
) -> None:
    audit, book = books(store)
    await append(store, audit, 4)
    _, hashes = await audit.linked_hashes()
    await book.receive(
        sign_checkpoint(SITE, CHAIN, i, h, time.time()) for i, h in enumerate(hashes, 1)
    )
    await rewrite(store, 3, "key_forged")
    verdict = await book.verify()
    assert (verdict.problem, verdict.first_disagreeing) == ("rewritten", 3)
    assert verdict.contradicts is not None and verdict.contradicts.index == 3


async def test_a_fork_shown_to_two_partners_is_named(store: Store) -> None:
    audit, book = books(store)
    await append(store, audit, 3)
    await book.sign_head()  # ap-west at #3
    await append(store, audit, 2)
    south = await site_signs(audit)  # rz-south saw #1..#5
    # the database owner goes back to #3 and writes another history, which ap-east signs
    await truncate(store, 3)
    await append(store, audit, 3, actor="other")
    east = await site_signs(audit, "ap-east")
    await book.receive([south, east])
    verdict = await book.verify()
    assert (verdict.problem, verdict.first_disagreeing) == ("forked", 4)
    assert verdict.contradicts is not None and verdict.contradicts.signer == "rz-south"
    assert verdict.other is not None and verdict.other.signer == "ap-east"
    assert "contradicts rz-south's checkpoint of entry #5" in verdict.describe()


async def test_two_partners_signing_different_heads_for_one_entry_is_a_fork(
    store: Store,
) -> None:
    audit, book = books(store)
    await append(store, audit, 4)
    south = await site_signs(audit)
    await truncate(store, 2)
    await append(store, audit, 2, actor="other")
    east = await site_signs(audit, "ap-east")
    await book.receive([south, east])
    verdict = await book.verify()
    assert verdict.problem == "forked" and verdict.first_disagreeing == 1
    assert verdict.contradicts is not None and verdict.contradicts.signer == "rz-south"


async def test_forged_and_unknown_checkpoints_are_refused_and_not_trusted(store: Store) -> None:
    audit, book = books(store)
    await append(store, audit, 3)
    good = await site_signs(audit)
    forged = Checkpoint(good.signer, CHAIN, good.index, "f" * 64, good.ts, good.signature)
    with pytest.raises(BadRequest):
        await book.receive([forged])
    with pytest.raises(BadRequest):
        await book.receive([sign_checkpoint(partner("mallory"), CHAIN, 3, good.hash, 1.0)])
    # brought along to a check, a forged checkpoint is set aside, not believed
    verdict = await book.verify([forged])
    assert verdict.ok and verdict.rejected == [forged]
