"""Which limits apply to a request: only those set, each under its own scope."""

from __future__ import annotations

from verbund.config import InstitutionConfig
from verbund.coordination import Limit
from verbund.tenancy import KeyEntry, quota_limits


def test_nothing_set_means_no_limits() -> None:
    inst = InstitutionConfig(id="uni-a")
    assert quota_limits(inst, KeyEntry("key_1", "uni-a", revoked=False)) == []


def test_institution_and_key_limits_each_under_their_scope() -> None:
    inst = InstitutionConfig(id="uni-a", requests_per_minute=40, tokens_per_month=1_000_000)
    key = KeyEntry("key_1", "uni-a", revoked=False, requests_per_minute=5, tokens_per_minute=900)
    assert quota_limits(inst, key) == [
        Limit("institution:uni-a", "rpm", 40),
        Limit("institution:uni-a", "tpmonth", 1_000_000),
        Limit("key:key_1", "rpm", 5),
        Limit("key:key_1", "tpm", 900),
    ]
