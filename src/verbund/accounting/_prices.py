"""What usage costs: the sites' published price lists applied to usage.

All arithmetic is :class:`~decimal.Decimal`; nothing is rounded here. Callers round
once, at the end (see :func:`money`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from decimal import ROUND_HALF_UP, Decimal

from verbund.config import ModelPrice, PriceList, SiteConfig

MILLION = Decimal(1_000_000)
HOUR = Decimal(3600)
CENT = Decimal("0.01")
ZERO = Decimal(0)
_FREE = ModelPrice()

# Usage records with these statuses were served (fully, or until a stream broke) and are
# charged; ``error`` and ``rejected`` never reached a model or produced nothing.
BILLABLE = ("ok", "incomplete")


def money(value: Decimal) -> Decimal:
    """Round to cents, half up (commercial rounding). Only for final figures."""
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


class PriceBook:
    """The price lists of all sites, looked up by site and model.

    ``sites`` is a list, or a function giving the sites as they are now: an access point
    passes its live federation, whose sites carry the prices their agents announce when
    the config gives none (see :func:`verbund.federation.accepted`), so a price list
    announced or changed at a site counts from its catalogue on, without a restart."""

    def __init__(self, sites: Iterable[SiteConfig] | Callable[[], Iterable[SiteConfig]]) -> None:
        if callable(sites):
            self._sites = sites
        else:
            fixed = list(sites)
            self._sites = lambda: fixed

    @property
    def _lists(self) -> dict[str, PriceList]:
        return {s.name: s.prices for s in self._sites() if s.prices}

    @property
    def currency(self) -> str:
        return next((p.currency for p in self._lists.values()), "EUR")

    def model_price(self, site: str, model: str) -> ModelPrice:
        return _price(self._lists.get(site), model)

    def cost(
        self,
        site: str,
        model: str,
        *,
        requests: int = 0,
        prompt_tokens: int = 0,
        completion_tokens: int = 0,
        gpu_seconds: float = 0.0,
        cpu_seconds: float = 0.0,
    ) -> Decimal:
        """Exact cost of billable usage at ``site``; unpriced sites and models cost nothing."""
        prices = self._lists.get(site)
        p = _price(prices, model)
        total = (
            prompt_tokens * p.input_per_million / MILLION
            + completion_tokens * p.output_per_million / MILLION
            + requests * p.per_inference
        )
        if prices is not None and (gpu_seconds or cpu_seconds):
            total += Decimal(str(gpu_seconds)) * prices.gpu_hour / HOUR
            total += Decimal(str(cpu_seconds)) * prices.cpu_hour / HOUR
        return total

    def compute_ceiling(self, *, cpu_seconds: float, gpu_seconds: float) -> Decimal:
        """The most that compute time can cost at any site: what a job is admitted
        against before it is placed (the site that runs it may be cheaper)."""
        return max(
            (
                Decimal(str(gpu_seconds)) * p.gpu_hour / HOUR
                + Decimal(str(cpu_seconds)) * p.cpu_hour / HOUR
                for p in self._lists.values()
            ),
            default=ZERO,
        )


def _price(prices: PriceList | None, model: str) -> ModelPrice:
    if prices is None:
        return _FREE
    return prices.models.get(model) or prices.models.get("*") or _FREE
