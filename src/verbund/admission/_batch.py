"""How batch items reach backends: the same router, policy, proxy and usage sink as
interactive traffic, and the same token quotas.

A batch is admitted once, when it is created (budget, requests per minute, policy). Its
items are then charged one by one against the institution's and the key's token quotas
as they are sent, at batch priority: when a window is full the item waits for the next
window (:class:`RateLimited` before anything is sent; the runner puts the item back
without counting an attempt) instead of failing. Each item leaves one usage record.

The budget is not checked per item: a batch admitted before its institution reached a
hard stop runs to its end. Cutting it off half-way would leave an output file with holes
for work the institution asked for while it was within budget and whose first half it
has already paid for; the overshoot is bounded by one batch, and no new batch starts.

An item's OpenAI ``user`` goes to backends as the keyed pseudonym the logs use, as for
interactive requests.
"""

from __future__ import annotations

from collections.abc import Callable

import orjson

from verbund.accounting import UsageRecord, UsageSink
from verbund.admission._tokens import estimate_prompt_tokens, max_tokens
from verbund.config import DataClass
from verbund.coordination import Limit, QuotaGate
from verbund.errors import ModelNotFound, PermissionDenied
from verbund.federation import Backend, Federation
from verbund.policy import RequestPolicy
from verbund.proxy import Forward, Proxy
from verbund.routing import RouteContext, Router
from verbund.tenancy import InstitutionRegistry, KeyService, token_limits

__all__ = ["BatchDispatch"]


class BatchDispatch:
    """Implements :class:`verbund.batch.Dispatch` with the access point's own components."""

    def __init__(
        self,
        *,
        router: Router,
        proxy: Proxy,
        federation: Federation,
        institutions: InstitutionRegistry,
        keys: KeyService,
        quotas: QuotaGate,
        usage: UsageSink,
        default_max_tokens: int,
        pseudonyms: Callable[[str], str],
    ) -> None:
        self._pseudonyms = pseudonyms
        self._router = router
        self._proxy = proxy
        self._federation = federation
        self._institutions = institutions
        self._keys = keys
        self._quotas = quotas
        self._usage = usage
        self._default_max_tokens = default_max_tokens

    def plan(
        self, model: str, institution_id: str, data_class: str, data_site: str | None = None
    ) -> list[Backend]:
        """The router's plan; with ``data_site`` (the site whose agent holds the batch's
        input) that site's backends come first, so its spare capacity is used before
        the batch's requests travel to other compliant sites."""
        inst = self._institutions.get(institution_id)
        if inst is None:
            raise PermissionDenied("The batch's institution is no longer a member.")
        if not self._federation.visible(model, institution_id):
            raise ModelNotFound(f"The model '{model}' does not exist.", param="model")
        plan = self._router.plan(
            model,
            RequestPolicy.for_institution(inst, DataClass(data_class)),
            RouteContext(
                home_site=self._federation.home_site,
                home_region=inst.home_region,
                priority="batch",  # only backends below the utilisation threshold
            ),
        )
        if not data_site:
            return plan
        return [b for b in plan if b.site.name == data_site] + [
            b for b in plan if b.site.name != data_site
        ]

    async def send(self, plan: list[Backend], path: str, body: bytes, record: UsageRecord) -> bytes:
        inst = self._institutions.get(record.institution_id)
        if inst is None:
            raise PermissionDenied("The batch's institution is no longer a member.")
        key = self._keys.by_id(record.key_id)
        record.person_id = key.person_id if key is not None else None  # a person's own key
        oip = path.startswith("/v2/")  # OIP inference: tensors, no tokens to reserve
        if oip:  # the tensors' sizes are what an inference is measured by
            record.request_bytes = len(body)
        else:
            body = await self._reserve(path, body, record, token_limits(inst, key))
        with self._usage.recording(record) as recording:
            answer = await self._proxy.call(
                Forward(path=path, body=body, stream=False, plan=plan, recording=recording)
            )
            if oip:
                record.response_bytes = len(answer.body)
        return answer.body

    async def _reserve(
        self, path: str, body: bytes, record: UsageRecord, limits: list[Limit]
    ) -> bytes:
        """The body as sent (its ``user`` pseudonymised), after its tokens are reserved
        against the token quotas (may wait: RateLimited)."""
        parsed = orjson.loads(body)
        user = parsed.get("user")
        if isinstance(user, str) and user:
            record.user_hash = parsed["user"] = self._pseudonyms(user)
            body = orjson.dumps(parsed)
        if limits:
            answer_tokens = 0 if path == "/v1/embeddings" else self._default_max_tokens
            tokens = estimate_prompt_tokens(parsed) + (max_tokens(parsed) or answer_tokens)
            await self._quotas.admit(record.request_id, limits, tokens)
        return body
