"""The access point's part of a job after its creation: place it, hand it to its site's
agent, and follow it there.

Each step is a short transaction on the job's mirror row in the federation's store, and
any access point may take it: the site is written before the handover, the handover is
idempotent at the agent (by the job's id), and following only copies the agent's state.
So when an access point dies, another one carries its jobs on; when an agent is away,
its jobs keep their last known state and nothing is lost (the agent carries on alone and
reports back when it returns).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from verbund.accounting import UsageRecord
from verbund.config import DataClass, InstitutionConfig
from verbund.errors import ApiError, Conflict, NotFound, SiteAgentError, SiteAgentUnavailable
from verbund.jobs._events import add_event
from verbund.jobs._files import TrainingFile, TrainingFileSource
from verbund.jobs._link import SiteLink
from verbund.jobs._mirror import follow
from verbund.jobs._moves import move_input, move_refusal
from verbund.jobs._placement import Placement
from verbund.jobs._recipes import RecipeBook
from verbund.jobs._rows import JobRows
from verbund.jobs._runner import Resources
from verbund.jobs._status import TERMINAL, JobStatus, move
from verbund.jobs._usage import job_usage
from verbund.policy import RequestPolicy, SiteFacts, describe_exclusions
from verbund.store import TrainingJobRow

log = logging.getLogger("verbund.jobs")

HANDED_OVER = "agent"  # the mirror's runner_job_id once the site's agent has the job
MOVE_RETRY_SECONDS = 5.0  # a file that could not move is tried again after this long
Placer = Callable[[InstitutionConfig, DataClass, Resources, str, str], Awaitable[Placement]]


def _unknown_site(name: str) -> SiteFacts | None:
    return None


class _MoveWaits(Exception):
    """A file could not move between two agents now (one away, a grant gone stale):
    the handover is tried again at the next step."""


@dataclass
class Handover:
    access_point: str
    rows: JobRows
    links: Mapping[str, SiteLink]
    files: TrainingFileSource
    recipes: RecipeBook
    institution: Callable[[str], InstitutionConfig | None]
    placement: Placer
    record_usage: Callable[[UsageRecord], None]
    # the site's facts as routing sees them now (None: unknown, and no file moves there)
    site_facts: Callable[[str], SiteFacts | None] = _unknown_site
    unreachable: dict[str, float] = field(default_factory=dict)  # site -> since when
    _waiting: dict[str, str] = field(default_factory=dict)
    _inputs: dict[str, dict[str, str]] = field(default_factory=dict)  # job -> key -> file
    _move_retry: dict[str, float] = field(default_factory=dict)  # job -> not before (monotonic)

    async def place(self, row: TrainingJobRow) -> None:
        inst = self.institution(row.institution_id)
        if inst is None:
            await self.rows.fail(
                row.id, "institution_removed", "The institution is no longer a member."
            )
            return
        recipe = self.recipes.recipes.get(row.recipe)
        if recipe is None:
            await self.rows.fail(
                row.id, "unknown_recipe", f"The recipe {row.recipe} is not registered."
            )
            return
        try:
            data_site = await self._data_site(row)
        except NotFound as exc:
            await self.rows.fail(row.id, "invalid_file", exc.message, "training_file")
            return
        p = await self.placement(
            inst,
            DataClass(row.data_class),
            Resources(**row.resources),
            recipe.base_model(row.params),
            data_site,
        )
        if p.site is None:
            if not p.possible:
                why = describe_exclusions({**p.excluded, **p.unfit}, [])
                await self.rows.fail(row.id, "no_site", f"No site may run this job any more: {why}")
                return
            waiting = "Waiting for a site: " + describe_exclusions(p.waiting, [])
            if self._waiting.get(row.id) != waiting:  # one event per change, not per poll
                self._waiting[row.id] = waiting

                def wait(s: AsyncSession, r: TrainingJobRow) -> None:
                    if r.status == JobStatus.validating_files:
                        move(r, JobStatus.queued)  # its files are checked at its site
                    add_event(s, r.id, waiting)

                await self.rows.update(row.id, wait)
            return
        self._waiting.pop(row.id, None)
        site = p.site

        def choose(s: AsyncSession, r: TrainingJobRow) -> None:
            if r.site is None and r.status not in TERMINAL:  # another access point was first
                r.site = site
                add_event(s, r.id, f"Site {site} chosen for the job", data={"site": site})

        await self.rows.update(row.id, choose)
        placed = await self.rows.get(row.id)
        if placed is not None and placed.site == site and placed.runner_job_id is None:
            await self.hand_over(placed)  # at once: the site's next report counts it

    async def _data_site(self, row: TrainingJobRow) -> str:
        for file_id in (row.training_file, row.validation_file):
            if file_id is not None:
                f = await self.files.open(row.institution_id, file_id)
                if f.site is not None:
                    return f.site
        return ""

    async def hand_over(self, row: TrainingJobRow) -> None:
        """Copy the job's inputs the site does not hold yet, then give it the job."""
        site = row.site or ""
        link = self.links.get(site)
        if link is None:
            await self.rows.fail(row.id, "site_removed", f"The site {site} runs no jobs any more.")
            return
        if time.monotonic() < self._move_retry.get(row.id, 0.0):
            return  # a file move failed a moment ago: no new grant at every step
        try:
            inputs = await self._stage(row, link)
            await link.accept(self._spec(row, inputs))
        except _MoveWaits as exc:
            self._move_retry[row.id] = time.monotonic() + MOVE_RETRY_SECONDS
            await self._note_once(row.id, str(exc))
            return
        except SiteAgentUnavailable as exc:
            self._away(site, exc)
            return
        except ApiError as exc:  # the site refused the job (its data class, its files)
            await self.rows.fail(row.id, exc.code or "site_refused", exc.message)
            return
        self.unreachable.pop(site, None)
        self._move_retry.pop(row.id, None)
        self._inputs[row.id] = {key: file_id for file_id, key in inputs.items()}

        def handed(s: AsyncSession, r: TrainingJobRow) -> None:
            if r.runner_job_id is None:
                r.runner_job_id = HANDED_OVER
                add_event(s, r.id, f"Job handed over to the agent of site {site}")

        await self.rows.update(row.id, handed)
        log.info("job %s handed over to %s", row.id, site)

    async def _stage(self, row: TrainingJobRow, link: SiteLink) -> dict[str, str]:
        """file id -> blob key at the site, copying files this access point holds."""
        out: dict[str, str] = {}
        for param, file_id in (
            ("training", row.training_file),
            ("validation", row.validation_file),
        ):
            if file_id is None:
                continue
            f = await self.files.open(row.institution_id, file_id)
            if f.site == link.site:
                out[file_id] = f.key
            elif f.site is None and (f.path is not None or f.stream is not None):
                key = f"in-{row.id}-{param}"
                await link.stage(key, f.path or _streamed(f), row.data_class)
                out[file_id] = key
            elif f.site is not None and f.site in self.links:
                key = f"in-{row.id}-{param}"
                await self._move(row, f, self.links[f.site], link, key)
                out[file_id] = key
            else:
                raise NotFound(f"The file {file_id} lies at site {f.site}, not {link.site}.")
        return out

    async def _move(
        self, row: TrainingJobRow, f: TrainingFile, source: SiteLink, target: SiteLink, key: str
    ) -> None:
        """Move a file agent to agent, after checking once more that it may lie there."""
        data_class = DataClass(row.data_class)
        if f.data_class is not None and f.data_class.rank > data_class.rank:
            data_class = f.data_class
        inst = self.institution(row.institution_id)
        if inst is None:
            raise NotFound("The institution is no longer a member.")
        policy = RequestPolicy.for_institution(inst, data_class)
        refusal = move_refusal(f.id, source.site, self.site_facts(target.site), policy)
        if refusal is not None:
            raise refusal  # fails the job, naming the constraint: the bytes stay
        try:
            size = await move_input(source, target, f.key, key, data_class)
        except (SiteAgentError, Conflict) as exc:  # an agent away, a grant gone stale
            raise _MoveWaits(
                f"Waiting to move file {f.id} from site {source.site} to site "
                f"{target.site}: {exc.message}"
            ) from None
        text = f"File {f.id} moved from site {source.site} to site {target.site}, agent to agent"

        def moved(s: AsyncSession, r: TrainingJobRow) -> None:
            add_event(s, r.id, text, data={"file": f.id, "from": source.site, "bytes": size})

        await self.rows.update(row.id, moved)
        log.info("job %s: file %s moved %s -> %s", row.id, f.id, source.site, target.site)

    async def _note_once(self, job_id: str, text: str) -> None:
        if self._waiting.get(job_id) == text:
            return
        self._waiting[job_id] = text

        def note(s: AsyncSession, r: TrainingJobRow) -> None:
            add_event(s, r.id, text)

        await self.rows.update(job_id, note)

    def _spec(self, row: TrainingJobRow, inputs: dict[str, str]) -> dict[str, Any]:
        return {
            "id": row.id,
            "kind": row.kind,
            "institution": row.institution_id,
            "key_id": row.key_id,
            "recipe": row.recipe,
            "model": row.model,
            "training_file": inputs[row.training_file],
            "validation_file": inputs.get(row.validation_file or ""),
            "data_class": row.data_class,
            "params": row.params,
            "resources": row.resources,
            "suffix": row.suffix,
            "seed": row.seed,
            "fine_tuned_model": row.fine_tuned_model,
            "created_at": row.created_at,
        }

    async def follow_site(self, site: str, rows: list[TrainingJobRow]) -> int:
        """One call to the site's agent for all its jobs: new state and events; how many
        of them ended."""
        link = self.links.get(site)
        ended = 0
        if link is None or not rows:
            return ended
        try:
            known = {r.id: r.metrics_offset for r in rows}
            changes = await link.changes(known)
            by_id = {r.id: r for r in rows}
            for change in changes:
                row = by_id.get(str(change["id"]))
                if row is None:
                    continue
                if row.cancel_requested and change["status"] not in TERMINAL:
                    await link.cancel(row.id, "a cancel request sent again")
                ended += await self._follow(row.id, change, known[row.id])
        except SiteAgentUnavailable as exc:
            self._away(site, exc)
            return ended
        self.unreachable.pop(site, None)
        return ended

    async def _follow(self, job_id: str, change: dict[str, Any], offset: int) -> int:
        """Apply one job's change; ``offset``: how many of its events the request said it
        had (another access point may have mirrored some of these meanwhile: the offset
        becomes what this answer covers, never the sum of both)."""
        events = list(change.get("events") or [])
        ended: list[TrainingJobRow] = []

        async def apply() -> None:
            async with self.rows.store.session() as s, s.begin():
                r = await s.get(TrainingJobRow, job_id, with_for_update=True)
                if r is None:
                    return
                if await follow(s, r, change, events, self._inputs.get(job_id, {})):
                    ended.append(r)
                r.metrics_offset = max(r.metrics_offset, offset + len(events))

        await apply()
        for r in ended:
            status = JobStatus(r.status)
            cpus = max(1, int(r.resources.get("cpus", 1)))
            self.record_usage(
                job_usage(
                    r,
                    status,
                    wall_seconds=r.cpu_seconds / cpus,
                    cpu_seconds=r.cpu_seconds,
                    gpu_seconds=r.gpu_seconds,
                    finished_at=r.finished_at or time.time(),
                )
            )
            self._inputs.pop(r.id, None)
            await self._drop_copies(r)
            log.info("job %s ended at its site: %s", r.id, r.status)
        return len(ended)

    async def _drop_copies(self, row: TrainingJobRow) -> None:
        """The copies of a job's files made for it at its site (staged from here or moved
        from another agent) go when the job has ended; the files stay where they were
        uploaded, under their own lifecycle (expiry, erasure)."""
        link = self.links.get(row.site or "")
        if link is None:
            return
        for param in ("training", "validation"):
            try:
                await link.blobs.delete(f"in-{row.id}-{param}")
            except ApiError as exc:  # the agent away: the copy stays with the site's job
                log.warning("job %s: copy of its %s file not removed: %s", row.id, param, exc)

    def _away(self, site: str, exc: ApiError) -> None:
        if site not in self.unreachable:
            log.warning("site agent of %s away: %s", site, exc.message)
        self.unreachable.setdefault(site, time.time())


def _streamed(f: TrainingFile) -> AsyncIterator[bytes]:
    assert f.stream is not None
    return f.stream()
