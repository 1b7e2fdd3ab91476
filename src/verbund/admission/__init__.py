"""Admission: budget, quotas, policy and route plan for every request that spends capacity.

Routes call the :class:`Admitter`; batch workers reach backends through
:class:`BatchDispatch`. Both record usage through the one usage sink.
"""

from verbund.admission._admission import Admission, Admitter, Ask, Entry, receipt_plan
from verbund.admission._batch import BatchDispatch
from verbund.admission._cold_start import ColdStart
from verbund.admission._shedding import Claim, Overload
from verbund.admission._tokens import (
    affinity_key,
    estimate_prompt_tokens,
    max_tokens,
)

__all__ = [
    "Admission",
    "Admitter",
    "Ask",
    "BatchDispatch",
    "Claim",
    "ColdStart",
    "Entry",
    "Overload",
    "affinity_key",
    "estimate_prompt_tokens",
    "max_tokens",
    "receipt_plan",
]
