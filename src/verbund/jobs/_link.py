"""What jobs ask of a site agent: its runner's report, handing a job over, following it,
cancelling it, and inference on the models it trained. All through the access point's
one client of the agent (:class:`~verbund.federation.AgentClient`)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from verbund.errors import NotFound
from verbund.federation import AgentClient
from verbund.files import AgentBlobStore, write_blob
from verbund.jobs._slots import RunnerReport

__all__ = ["INSTITUTION_HEADER", "SiteLink"]

INSTITUTION_HEADER = "x-verbund-institution"
_CHUNK = 1 << 20


class SiteLink:
    def __init__(self, client: AgentClient) -> None:
        self.client = client
        self.blobs = AgentBlobStore(client)

    @property
    def site(self) -> str:
        return self.client.site

    async def report(self) -> RunnerReport | None:
        """The site's runner now; None when the site runs no jobs."""
        try:
            data = await self.client.get_json("/jobs/runner")
        except NotFound:
            return None
        return RunnerReport.from_dict(data)

    async def stage(self, key: str, source: Path | AsyncIterator[bytes], data_class: str) -> None:
        """Copy a file the access point may hold to the agent's file store, streamed:
        from a path, or from a stream of its bytes (a sealed store's, decrypted in memory
        chunk by chunk: the clear bytes never touch the access point's disk)."""
        chunks = _chunks(source) if isinstance(source, Path) else source
        await write_blob(self.blobs, key, chunks, data_class)

    async def grant(self, key: str, to_site: str, data_class: str) -> dict[str, Any]:
        """A read grant for one of this site's blobs, for ``to_site``'s agent."""
        answer: dict[str, Any] = await self.client.post_json(
            "/transfers/grants", {"key": key, "to_site": to_site, "data_class": data_class}
        )
        return answer

    async def fetch(
        self, key: str, data_class: str, source: dict[str, str], within: float = 600.0
    ) -> dict[str, Any]:
        """Have this site's agent pull a blob from another site's agent (``source``: its
        site, url, key and grant) and keep it as ``key``; the bytes go agent to agent."""
        answer: dict[str, Any] = await self.client.post_json(
            "/transfers",
            {"key": key, "data_class": data_class, "source": source},
            within=within,
        )
        return answer

    async def accept(self, spec: dict[str, Any]) -> dict[str, Any]:
        answer: dict[str, Any] = await self.client.post_json("/jobs", spec)
        return answer

    async def changes(self, known: dict[str, int]) -> list[dict[str, Any]]:
        answer = await self.client.post_json("/jobs/changes", {"jobs": known})
        return list(answer["jobs"])

    async def cancel(self, job_id: str, actor: str) -> dict[str, Any]:
        answer: dict[str, Any] = await self.client.post_json(
            f"/jobs/{job_id}/cancel", {"actor": actor}
        )
        return answer

    async def metadata(self, model: str, institution: str) -> dict[str, Any]:
        answer: dict[str, Any] = await self.client.get_json(
            f"/trained/{model}", headers={INSTITUTION_HEADER: institution}
        )
        return answer

    async def infer(self, model: str, institution: str, body: dict[str, Any]) -> dict[str, Any]:
        answer: dict[str, Any] = await self.client.post_json(
            f"/trained/{model}/infer", body, headers={INSTITUTION_HEADER: institution}
        )
        return answer


async def _chunks(path: Path) -> AsyncIterator[bytes]:
    with path.open("rb") as f:
        while True:
            chunk = await asyncio.to_thread(f.read, _CHUNK)
            if not chunk:
                return
            yield chunk
