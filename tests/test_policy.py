from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from verbund.config import DataClass
from verbund.errors import BadRequest
from verbund.policy import RequestPolicy, exclusion_reason, request_data_class, split_sites


@dataclass(frozen=True)
class FakeSite:
    name: str
    region: str
    jurisdiction: str
    max_data_class: DataClass
    certifications: tuple[str, ...] = ()


def test_header_can_only_raise_the_data_class() -> None:
    assert request_data_class(DataClass.internal, "sensitive") is DataClass.sensitive
    assert request_data_class(DataClass.internal, "public") is DataClass.internal
    assert request_data_class(DataClass.confidential, None) is DataClass.confidential
    with pytest.raises(BadRequest) as err:
        request_data_class(DataClass.public, "top-secret")
    assert err.value.param == "X-Verbund-Data-Class"


def test_reasons_name_the_constraint() -> None:
    site = FakeSite("ost", "SN", "DE", DataClass.internal)
    reason = exclusion_reason(site, RequestPolicy(DataClass.sensitive))
    assert reason is not None and "max_data_class internal" in reason
    reason = exclusion_reason(
        site, RequestPolicy(DataClass.public, allowed_regions=frozenset({"BY"}))
    )
    assert reason is not None and "allowed_regions" in reason
    reason = exclusion_reason(
        site, RequestPolicy(DataClass.public, allowed_jurisdictions=frozenset({"AT"}))
    )
    assert reason is not None and "jurisdiction DE" in reason
    assert exclusion_reason(site, RequestPolicy(DataClass.internal)) is None
    reason = exclusion_reason(
        site, RequestPolicy(DataClass.public, required_certifications=frozenset({"BSI-C5"}))
    )
    assert reason is not None and "BSI-C5" in reason
    certified = FakeSite("west", "NW", "DE", DataClass.sensitive, ("BSI-C5", "ISO27001"))
    assert (
        exclusion_reason(
            certified,
            RequestPolicy(DataClass.sensitive, required_certifications=frozenset({"BSI-C5"})),
        )
        is None
    )


sites_st = st.lists(
    st.builds(
        FakeSite,
        certifications=st.lists(st.sampled_from(["ISO27001", "BSI-C5"]), unique=True).map(tuple),
        name=st.uuids().map(str),
        region=st.sampled_from(["NW", "BY", "SN", "HE"]),
        jurisdiction=st.sampled_from(["DE", "AT", "NL"]),
        max_data_class=st.sampled_from(list(DataClass)),
    ),
    max_size=8,
)
policy_st = st.builds(
    RequestPolicy,
    data_class=st.sampled_from(list(DataClass)),
    allowed_regions=st.frozensets(st.sampled_from(["NW", "BY", "SN", "HE"])),
    allowed_jurisdictions=st.frozensets(st.sampled_from(["DE", "AT", "NL"])),
    required_certifications=st.frozensets(st.sampled_from(["ISO27001", "BSI-C5"])),
)


@given(sites_st, policy_st)
def test_no_allowed_site_violates_the_policy(sites: list[FakeSite], policy: RequestPolicy) -> None:
    allowed, excluded = split_sites(sites, policy)
    assert len(allowed) + len(excluded) == len({s.name for s in sites}) or len(sites) != len(
        {s.name for s in sites}
    )
    for s in allowed:
        assert s.max_data_class.rank >= policy.data_class.rank
        assert not policy.allowed_regions or s.region in policy.allowed_regions
        assert not policy.allowed_jurisdictions or s.jurisdiction in policy.allowed_jurisdictions
        assert policy.required_certifications <= set(s.certifications)
    for s in sites:
        if s.name in excluded:
            assert s not in allowed
