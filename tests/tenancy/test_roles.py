"""The role model as one pure decision: who may do what to which institution or site."""

from __future__ import annotations

import pytest

from verbund.tenancy import Actor, Permission, Role, can, highest_role

P = Permission
member = Actor("person", "u_1", Role.member, "uni-a")
inst_admin = Actor("person", "u_2", Role.institution_admin, "uni-a")
operator = Actor("key", "akey_1", Role.site_operator, None, "west")
auditor = Actor("person", "u_3", Role.auditor, "uni-b")
fed_admin = Actor("key", "akey_2", Role.federation_admin)
bootstrap = Actor("bootstrap", "admin", Role.federation_admin)


@pytest.mark.parametrize("who", [fed_admin, bootstrap])
@pytest.mark.parametrize("permission", sorted(set(Permission) - {Permission.own_keys}))
def test_federation_admin_may_do_everything(who: Actor, permission: Permission) -> None:
    assert can(who, permission, None)
    assert can(who, permission, "uni-b")


def test_own_keys_are_in_the_own_institution_for_every_role() -> None:
    """A federation admin of no member institution (a computing centre) has no own keys."""
    assert not can(fed_admin, P.own_keys, None) and not can(bootstrap, P.own_keys, "uni-b")
    of_uni_a = Actor("person", "u_4", Role.federation_admin, "uni-a")
    assert can(of_uni_a, P.own_keys, "uni-a") and not can(of_uni_a, P.own_keys, "uni-b")


def test_member_has_only_own_keys_of_own_institution() -> None:
    assert can(member, P.own_keys, "uni-a")
    assert not can(member, P.own_keys, "uni-b")
    assert not can(member, P.own_keys, None)
    for p in set(Permission) - {P.own_keys}:
        assert not can(member, p, "uni-a"), p


def test_institution_admin_is_scoped_to_its_institution() -> None:
    for p in (P.keys_read, P.keys_write, P.usage_read, P.budgets_read, P.people_write):
        assert can(inst_admin, p, "uni-a"), p
        assert not can(inst_admin, p, "uni-b"), p
        assert not can(inst_admin, p, None), p  # None: the whole federation
    for p in (P.institutions_write, P.admin_keys_write, P.site_lifecycle, P.audit_read):
        assert not can(inst_admin, p, "uni-a"), p
    assert not can(Actor("key", "k", Role.institution_admin, None), P.keys_read, None)


def test_site_operator_runs_its_own_site_only() -> None:
    assert can(operator, P.site_lifecycle, "west")
    assert can(operator, P.sites_read, "west")
    assert not can(operator, P.site_lifecycle, "sued")
    assert not can(operator, P.sites_read, None)
    assert not can(operator, P.access_point_drain)
    assert not can(operator, P.usage_read, None)
    assert not can(operator, P.own_keys, None)  # a key of no institution makes no keys


def test_auditor_reads_everything_and_changes_nothing() -> None:
    for p in (P.usage_read, P.settlement_read, P.audit_read, P.budgets_read, P.sites_read):
        assert can(auditor, p, None), p
        assert can(auditor, p, "uni-a"), p
    for p in (
        P.site_lifecycle,
        P.keys_write,
        P.admin_keys_write,
        P.institutions_write,
        P.jobs_write,
        P.access_point_drain,
        P.people_write,
    ):
        assert not can(auditor, p, None), p
        assert not can(auditor, p, "uni-b"), p
    assert can(auditor, P.own_keys, "uni-b") and not can(auditor, P.own_keys, "uni-a")


def test_highest_role_and_audit_name() -> None:
    assert highest_role(set()) is Role.member
    assert highest_role({Role.auditor, Role.site_operator}) is Role.site_operator
    assert highest_role({Role.member, Role.federation_admin}) is Role.federation_admin
    assert operator.audit_name == "akey_1 (site_operator)"
