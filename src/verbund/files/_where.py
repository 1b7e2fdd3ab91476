"""Where a file's bytes may lie: a pure decision, facts in, a site (or this host) out.

The access point's host may hold files up to its own class (``[gateway]
max_data_class``); a file of a higher class goes to the agent of a site that may hold
it for this institution (its data policy: data class, allowed sites, regions,
jurisdictions, certifications), the home site first, then one in the institution's home
region. Nothing compliant: the upload is refused, never stored where it may not lie.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from verbund.config import DataClass
from verbund.errors import PolicyViolation
from verbund.policy import RequestPolicy, SiteFacts, describe_exclusions, split_sites

S = TypeVar("S", bound=SiteFacts)

__all__ = ["storage_site"]


def storage_site(
    policy: RequestPolicy,
    holds_here: DataClass,
    with_agents: Sequence[S],
    *,
    home_region: str = "",
    home_site: str = "",
) -> str | None:
    """The site whose agent stores the file; None: this host may hold it."""
    if policy.data_class.rank <= holds_here.rank:
        return None
    allowed, excluded = split_sites(with_agents, policy)
    if not allowed:
        why = describe_exclusions(excluded, []) or "no site runs an agent that stores files"
        raise PolicyViolation(
            f"This access point holds data up to {holds_here.value}; no site may store "
            f"this {policy.data_class.value} file for you: {why}"
        )
    best = min(allowed, key=lambda s: (s.name != home_site, s.region != home_region, s.name))
    return best.name
