"""The model catalogue: what a caller may use, where it runs, and whether it can serve now.

``GET /v1/models`` shows every model at least one site may serve for the caller's
institution (its data policy at the request's data class: the key's default, raised by
``X-Verbund-Data-Class``), of the kinds asked for (``?kind=chat``, or the key's
``model_kinds``, so chat front-ends list no embedding or OIP models). A model whose compliant
sites are all drained, down or ejected stays in the list with ``available: false``: the
caller learns it exists and is out of service, instead of guessing. ``status`` says the
same in one word, including on-demand models that a site starts on the first request.
The OpenAI fields (``id``, ``object``, ``created``, ``owned_by``) come first; Verbund's
own go under ``verbund``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from verbund.config import DataClass, ModelConfig, inherited_license
from verbund.federation import Federation, Site
from verbund.policy import RequestPolicy, exclusion_reason, split_sites

__all__ = ["catalogue", "model_card"]


def _site_entry(site: Site, model: str, now: float) -> dict[str, Any]:
    backends = [b for b in site.backends if b.serves(model)]
    up = sum(1 for b in backends if b.available(now))
    return {
        "name": site.name,
        "region": site.region,
        "jurisdiction": site.jurisdiction,
        "max_data_class": site.max_data_class.value,
        "state": site.state.value,
        "backends": len(backends),
        "backends_available": up,
        "available": site.accepts_new_requests and up > 0,
        # on-demand models: the site's own status of it (ready | starting | stopped)
        "on_demand": od.status if (od := site.on_demand.get(model)) is not None else None,
    }


def status(sites: list[Site], entries: list[dict[str, Any]]) -> str:
    """``ready`` (a compliant site serves it now), ``starting`` (one is starting it),
    ``stopped`` (one would start it on the first request) or ``unavailable``."""
    if any(e["available"] for e in entries):
        return "ready"
    startable = [e["on_demand"] for s, e in zip(sites, entries, strict=True)
                 if s.accepts_new_requests and e["on_demand"] is not None]  # fmt: skip
    if any(st in ("starting", "ready") for st in startable):
        return "starting"
    return "stopped" if startable else "unavailable"


def _data_classes(sites: list[Site], policy: RequestPolicy) -> list[str]:
    """The data classes a request of this caller may carry to the model.

    From the key's default class (a header can only raise it) up to the highest class
    some site serving the model takes under the institution's other rules (allowed
    sites, regions, jurisdictions).
    """
    return [
        d.value
        for d in DataClass
        if d.rank >= policy.data_class.rank
        and any(exclusion_reason(s, _with_class(policy, d)) is None for s in sites)
    ]


def _with_class(policy: RequestPolicy, data_class: DataClass) -> RequestPolicy:
    return RequestPolicy(
        data_class=data_class,
        allowed_sites=policy.allowed_sites,
        allowed_regions=policy.allowed_regions,
        allowed_jurisdictions=policy.allowed_jurisdictions,
    )


def model_card(model: ModelConfig, models: Mapping[str, ModelConfig]) -> dict[str, Any]:
    """The model card: machine-readable licence (SPDX, a fine-tuned model's from its
    base), framework, source, training data, intended use and restrictions; for OIP
    models also the tensors it takes and gives and how large a request may be."""
    card: dict[str, Any] = {
        "license": inherited_license(model, models) or None,
        "framework": model.framework or None,
        "base_model": model.base_model or None,
        "source": model.card.source or None,
        "training_data": model.card.training_data or None,
        "intended_use": model.card.intended_use or None,
        "restrictions": model.card.restrictions or None,
    }
    if model.kind == "oip":
        card["inputs"] = [t.model_dump() for t in model.inputs]
        card["outputs"] = [t.model_dump() for t in model.outputs]
        card["max_batch"] = model.max_batch or None
        card["max_request_bytes"] = model.max_request_bytes or None
    return card


def model_entry(
    federation: Federation,
    model: ModelConfig,
    policy: RequestPolicy,
    created: int,
    now: float,
) -> dict[str, Any] | None:
    """One catalogue entry, or None when policy excludes the model at every site."""
    all_sites = federation.sites_for(model.name)
    sites, _ = split_sites(all_sites, policy)
    if not sites:
        return None
    site_entries = [_site_entry(s, model.name, now) for s in sites]
    card = model_card(model, federation.models)
    available = any(e["available"] for e in site_entries)
    return {
        "id": model.name,
        "object": "model",
        "created": created,
        "owned_by": model.owned_by,
        "verbund": {
            "kind": model.kind,
            "description": model.description,
            "license": card["license"],
            "framework": card["framework"],
            "owner_site": model.owner_site or None,
            "base_model": model.base_model or None,
            "context_length": model.context_length,
            "modalities": model.input_modalities,
            "data_classes": _data_classes(all_sites, policy),
            "available": available,
            "status": status(sites, site_entries),
            "capabilities": capabilities(model),
            "sites": site_entries,
            "card": card,
        },
    }


def capabilities(model: ModelConfig) -> dict[str, bool]:
    """What a client may ask of the model. Every chat backend takes tools and structured
    output in OpenAI's shapes (llama.cpp's are rewritten for it and grammar-enforced)."""
    chat = model.kind == "chat"
    return {
        "chat": chat,
        "completions": model.kind in ("chat", "completion"),
        "tools": chat,
        "structured_output": chat,
        "embeddings": model.kind == "embedding",
        "vision": chat and "image" in model.input_modalities,
        "inference": model.kind == "oip",
    }


def catalogue(
    federation: Federation,
    policy: RequestPolicy,
    created: int,
    now: float | None = None,
    kinds: frozenset[str] = frozenset(),
) -> list[dict[str, Any]]:
    """Every model ``policy`` may use (of ``kinds``; empty: all), in config order, with
    its sites and their state."""
    now = time.monotonic() if now is None else now
    out = []
    for model in federation.models.values():
        if kinds and model.kind not in kinds:
            continue
        entry = model_entry(federation, model, policy, created, now)
        if entry is not None:
            out.append(entry)
    return out
