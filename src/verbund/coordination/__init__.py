"""Coordination between access points: events, presence and shared quotas.

In-process implementations serve a single access point; Redis ones serve several.
"""

from verbund.coordination._bus import EventBus, LocalBus, RedisBus
from verbund.coordination._gate import QuotaGate
from verbund.coordination._limits import (
    Limit,
    Limiter,
    LocalLimiter,
    RedisLimiter,
    Reservation,
)
from verbund.coordination._presence import LocalPresence, Presence, RedisPresence
from verbund.coordination._seats import LocalSeats, RedisSeats, Seat, Seats, Taken

__all__ = [
    "EventBus",
    "Limit",
    "Limiter",
    "LocalBus",
    "LocalLimiter",
    "LocalPresence",
    "LocalSeats",
    "Presence",
    "QuotaGate",
    "RedisBus",
    "RedisLimiter",
    "RedisPresence",
    "RedisSeats",
    "Reservation",
    "Seat",
    "Seats",
    "Taken",
]
