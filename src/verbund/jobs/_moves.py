"""Moving a job's input file from the site whose agent holds it to the site that runs the
job: agent to agent, never through the access point.

Placement prefers the site that already holds a job's data; when another compliant site
runs the job (the holder is draining, busy or lacks what the job needs), the access point
checks once more that the file may lie at the receiving site (:func:`move_refusal`, a
pure decision: the file's data class against the site's ``max_data_class`` and the
institution's data policy — fail closed, naming the constraint), asks the holding agent
for a read grant for that one file and that site, and asks the receiving agent to pull
the file with it (:mod:`verbund.agent._transfers` argues why the receiver pulls). The
access point sends two small JSON requests; the bytes go on one connection between the
two agents, so neither the access point's disk nor its memory ever holds them.
"""

from __future__ import annotations

from verbund.config import DataClass
from verbund.errors import PolicyViolation
from verbund.jobs._link import SiteLink
from verbund.policy import RequestPolicy, SiteFacts, exclusion_reason

__all__ = ["move_input", "move_refusal"]


def move_refusal(
    file_id: str, holder: str, target: SiteFacts | None, policy: RequestPolicy
) -> PolicyViolation | None:
    """Why the file may not move from ``holder`` to ``target`` (None: it may).
    ``policy.data_class`` is the file's class (or the job's, if higher)."""
    if target is None:
        why = "the site is not part of this federation"
    else:
        why = exclusion_reason(target, policy) or ""
    if not why:
        return None
    name = target.name if target is not None else "?"
    return PolicyViolation(
        f"The {policy.data_class.value} file {file_id} may not move from site {holder} "
        f"to site {name}: {why}."
    )


async def move_input(
    source: SiteLink,
    target: SiteLink,
    source_key: str,
    key: str,
    data_class: DataClass,
) -> int:
    """Have ``target``'s agent pull ``source_key`` from ``source``'s agent as ``key``;
    the bytes moved. Errors of either agent come out as the errors tree's."""
    grant = await source.grant(source_key, target.site, data_class.value)
    answer = await target.fetch(
        key,
        data_class.value,
        {
            "site": source.site,
            "url": str(grant.get("url") or source.client.url),
            "key": source_key,
            "grant": str(grant["grant"]),
        },
    )
    return int(answer["bytes"])
