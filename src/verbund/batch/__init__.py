"""Batches (the OpenAI Batch API): validation, durable items, a runner that fills spare capacity."""

from verbund.batch._capacity import Capacity
from verbund.batch._execute import Dispatch
from verbund.batch._finalize import Finalizer
from verbund.batch._items import ClaimedItem, ItemStore, Outcome
from verbund.batch._limiter import AdaptiveLimiter, Signal
from verbund.batch._objects import BatchStatus, ItemStatus
from verbund.batch._runner import BatchRunner
from verbund.batch._service import BatchRequest, BatchService, BodyCheck, ModelCheck, parse_create
from verbund.batch._validate import (
    ENDPOINTS,
    OIP_USAGE_ENDPOINT,
    BatchLineError,
    ItemRef,
    Validation,
    oip_model,
    validate_input,
)

__all__ = [
    "ENDPOINTS",
    "OIP_USAGE_ENDPOINT",
    "AdaptiveLimiter",
    "BatchLineError",
    "BatchRequest",
    "BatchRunner",
    "BatchService",
    "BatchStatus",
    "BodyCheck",
    "Capacity",
    "ClaimedItem",
    "Dispatch",
    "Finalizer",
    "ItemRef",
    "ItemStatus",
    "ItemStore",
    "ModelCheck",
    "Outcome",
    "Signal",
    "Validation",
    "oip_model",
    "parse_create",
    "validate_input",
]
