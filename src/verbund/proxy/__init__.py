"""The proxy: failover along a route plan, one try at a time, and the streamed relay."""

from verbund.proxy._attempt import RETRYABLE_STATUS
from verbund.proxy._forward import (
    Answer,
    ClientGone,
    Forward,
    sanitize_upstream_message,
    until_disconnect,
)
from verbund.proxy._proxy import Proxy
from verbund.proxy._sse import SSEUsageFilter, Usage, error_event, stream_of_answer
from verbund.proxy._watch import WATCH_STEP, Hung

__all__ = [
    "RETRYABLE_STATUS",
    "WATCH_STEP",
    "Answer",
    "ClientGone",
    "Forward",
    "Hung",
    "Proxy",
    "SSEUsageFilter",
    "Usage",
    "error_event",
    "sanitize_upstream_message",
    "stream_of_answer",
    "until_disconnect",
]
