from __future__ import annotations

from verbund.routing import RetryBudget


def test_retries_are_bounded_by_the_ratio_under_mass_failure() -> None:
    budget = RetryBudget(ratio=0.2, min_per_second=0.0, cap=100)
    now = 0.0
    retries = 0
    for _ in range(1000):
        budget.on_request(now)
        # every request fails and wants two more tries
        for _ in range(2):
            if budget.try_spend(now):
                retries += 1
    # 20 % of requests plus the initial reserve (cap / 10)
    assert retries <= 0.2 * 1000 + 10
    assert retries >= 0.2 * 1000 - 1


def test_a_trickle_lets_a_quiet_access_point_fail_over() -> None:
    budget = RetryBudget(ratio=0.2, min_per_second=2.0, cap=100)
    while budget.try_spend(0.0):
        pass
    assert not budget.try_spend(0.0)
    assert budget.try_spend(1.0)  # one second later, two tokens have trickled in
    assert budget.try_spend(1.0)
    assert not budget.try_spend(1.0)
