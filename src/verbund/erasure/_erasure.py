"""The erasure of one key's or one person's data (see the package docstring)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import delete, select

from verbund.audit import AuditLog, Who
from verbund.errors import ApiError, NotFound
from verbund.federation import AgentClient
from verbund.files import FileService
from verbund.store import (
    ApiKeyRow,
    Base,
    BatchRow,
    FileRow,
    Store,
    StoredResponseRow,
    TrainingJobRow,
)

log = logging.getLogger("verbund.erasure")

__all__ = ["Erasure", "ErasureReport"]


@dataclass
class ErasureReport:
    subject: str  # "key:<id>" or "person:<id>"
    institution: str
    keys: list[str] = field(default_factory=list)
    files: int = 0
    batches: int = 0
    training_jobs: int = 0
    responses: int = 0
    # per site agent: what it erased of the subject's jobs (jobs, artefacts, files,
    # models), or why it could not be reached (then erase again once it is back)
    sites: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        return asdict(self)


class Erasure:
    def __init__(
        self,
        store: Store,
        files: FileService,
        audit: AuditLog,
        agents: Mapping[str, AgentClient] | None = None,
    ) -> None:
        self._store = store
        self._files = files
        self._audit = audit
        self._agents = dict(agents or {})

    async def _at_sites(self, institution: str, keys: list[str]) -> dict[str, Any]:
        """Every site agent erases the subject's jobs' data it holds (before the rows
        here go: the job ids are still known)."""
        if not self._agents:
            return {}
        async with self._store.session() as s:
            jobs = list(
                (await s.execute(select(TrainingJobRow.id).where(TrainingJobRow.key_id.in_(keys))))
                .scalars()
                .all()
            )
        out: dict[str, Any] = {}
        for site, agent in sorted(self._agents.items()):
            try:
                got = await agent.erase(institution, keys, jobs)
                out[site] = {k: v for k, v in got.items() if k != "site"}
            except ApiError as exc:
                out[site] = {"error": exc.message}
                log.warning("erasure at site %s failed: %s", site, exc.message)
        return out

    async def subject_keys(self, *, key_id: str = "", person_id: str = "") -> tuple[str, list[str]]:
        """(institution, key ids) of a key or a person; 404 if there are none."""
        q = select(ApiKeyRow.id, ApiKeyRow.institution_id)
        q = q.where(ApiKeyRow.id == key_id) if key_id else q.where(ApiKeyRow.person_id == person_id)
        async with self._store.session() as s:
            rows = (await s.execute(q)).all()
        if not rows:
            raise NotFound(f"No keys of {'key ' + key_id if key_id else 'person ' + person_id}")
        return rows[0][1], [r[0] for r in rows]

    async def erase(self, who: Who, *, key_id: str = "", person_id: str = "") -> ErasureReport:
        institution, keys = await self.subject_keys(key_id=key_id, person_id=person_id)
        subject = f"key:{key_id}" if key_id else f"person:{person_id}"
        report = ErasureReport(subject, institution, keys)
        report.sites = await self._at_sites(institution, keys)
        blobs: list[tuple[str, str | None]] = []
        async with self._store.session() as s, s.begin():
            batches = (
                (await s.execute(select(BatchRow).where(BatchRow.key_id.in_(keys)))).scalars().all()
            )
            jobs = (
                (await s.execute(select(TrainingJobRow).where(TrainingJobRow.key_id.in_(keys))))
                .scalars()
                .all()
            )
            file_ids = {
                fid
                for b in batches
                for fid in (b.input_file_id, b.output_file_id, b.error_file_id)
                if fid
            }
            file_ids |= {fid for j in jobs for fid in (j.training_file, j.validation_file) if fid}
            files = (
                (
                    await s.execute(
                        select(FileRow).where(
                            FileRow.institution_id == institution,
                            FileRow.key_id.in_(keys) | FileRow.id.in_(file_ids),
                        )
                    )
                )
                .scalars()
                .all()
            )
            batch_ids = [b.id for b in batches]
            job_ids = [j.id for j in jobs]
            for table in Base.metadata.sorted_tables:  # children first: items, events
                if table.name != "batches" and "batch_id" in table.c and batch_ids:
                    await s.execute(delete(table).where(table.c.batch_id.in_(batch_ids)))
                if table.name != "training_jobs" and "job_id" in table.c and job_ids:
                    await s.execute(delete(table).where(table.c.job_id.in_(job_ids)))
            if batch_ids:
                await s.execute(delete(BatchRow).where(BatchRow.id.in_(batch_ids)))
            if job_ids:
                await s.execute(delete(TrainingJobRow).where(TrainingJobRow.id.in_(job_ids)))
            if files:
                await s.execute(delete(FileRow).where(FileRow.id.in_([f.id for f in files])))
            gone = await s.execute(
                delete(StoredResponseRow).where(
                    StoredResponseRow.institution_id == institution,
                    StoredResponseRow.key_id.in_(keys),
                )
            )
            report.responses = int(getattr(gone, "rowcount", 0) or 0)
            blobs = [(f.blob_key, f.site) for f in files]
            report.files, report.batches, report.training_jobs = len(files), len(batches), len(jobs)
            await self._audit.append(
                s,
                actor=who,
                action="data.erase",
                target=subject,
                after={
                    "institution": institution,
                    "keys": keys,
                    "files": report.files,
                    "batches": report.batches,
                    "training_jobs": report.training_jobs,
                    "responses": report.responses,
                    "sites": report.sites,
                },
            )
        for key, site in blobs:  # rows first, then bytes: no row ever points to a missing blob
            try:  # a file held by a site's agent is erased there
                await self._files.blobs_at(site).delete(key)
            except (OSError, ApiError) as exc:  # without its row: the file sweep removes it
                log.warning("erasure: blob %s at %s left to the sweep: %s", key, site, exc)
        if self._store.engine.dialect.name == "sqlite":
            async with self._store.engine.connect() as conn:
                await conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        return report
