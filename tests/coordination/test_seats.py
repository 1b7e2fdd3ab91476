"""Concurrency seats of one access point (the Redis ones: test_seats_redis_real.py)."""

from __future__ import annotations

import pytest

from verbund.coordination import LocalSeats, Seat
from verbund.errors import TooManyConcurrent


def test_local_seats_count_per_scope() -> None:
    seats = LocalSeats()
    both = [Seat("key:k1", 1), Seat("institution:a", 2)]
    first = seats.take_now(both)
    with pytest.raises(TooManyConcurrent, match="key k1 may have 1"):
        seats.take_now(both)
    other_key = seats.take_now([Seat("key:k2", 1), Seat("institution:a", 2)])
    with pytest.raises(TooManyConcurrent, match="institution a"):
        seats.take_now([Seat("key:k3", 1), Seat("institution:a", 2)])
    assert seats.counts == {"key:k1": 1, "key:k2": 1, "institution:a": 2}
    first.release()
    other_key.release()
    assert seats.counts == {}
