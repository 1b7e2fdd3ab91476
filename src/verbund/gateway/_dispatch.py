"""How batch work reaches backends: the same router, policy and proxy as interactive traffic."""

from __future__ import annotations

from verbund.accounting import UsageRecord
from verbund.config import DataClass
from verbund.errors import PermissionDenied
from verbund.federation import Backend, Federation
from verbund.gateway._forward import Forward
from verbund.gateway._proxy import Proxy
from verbund.policy import RequestPolicy
from verbund.routing import RouteContext, Router
from verbund.tenancy import InstitutionRegistry


class ProxyDispatch:
    """Implements :class:`verbund.batch.Dispatch` with the access point's own components."""

    def __init__(
        self,
        router: Router,
        proxy: Proxy,
        federation: Federation,
        institutions: InstitutionRegistry,
    ) -> None:
        self._router = router
        self._proxy = proxy
        self._federation = federation
        self._institutions = institutions

    def plan(self, model: str, institution_id: str, data_class: str) -> list[Backend]:
        inst = self._institutions.get(institution_id)
        if inst is None:
            raise PermissionDenied("The batch's institution is no longer a member.")
        return self._router.plan(
            model,
            RequestPolicy.for_institution(inst, DataClass(data_class)),
            RouteContext(
                home_site=self._federation.home_site,
                home_region=inst.home_region,
                priority="batch",  # only backends below the utilisation threshold
            ),
        )

    async def send(self, plan: list[Backend], path: str, body: bytes, record: UsageRecord) -> bytes:
        answer = await self._proxy.call(
            Forward(
                path=path,
                body=body,
                stream=False,
                drop_usage_chunk=False,
                plan=plan,
                record=record,
            )
        )
        return answer.body
