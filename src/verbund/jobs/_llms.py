"""Fine-tuned language models into the federation: served at their site, for their owner.

A succeeded ``lora-sft`` job's model becomes a federation model like any other: a
``ModelConfig`` (its card inherits the base's licence, context length and modalities and
names the base), and one backend at the job's site, the llama.cpp server that
``AdapterServers`` starts there with the site's base GGUF and the job's adapter. Requests
for it then take the one request path (admission, quotas, routing, failover, usage);
the model's ``institutions`` list makes it its institution's alone: another one gets 404
from admission and does not see it in ``/v1/models``.

The adapter is never read by this code, only located in the job's folder at the site;
what runs at the access point is which server to route to.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

from verbund.config import BackendConfig, FederationConfig, ModelConfig, SiteConfig
from verbund.errors import RunnerError
from verbund.federation import Federation, UpstreamPool
from verbund.jobs._adapters import AdapterServers
from verbund.jobs._models import FineTunedModel, ModelRegistry
from verbund.jobs._runner import Runner

log = logging.getLogger("verbund.jobs")

RETRY_SECONDS = 60.0  # a model whose server failed to start is tried again after this
MAX_CONCURRENCY = 4


def model_card(model: FineTunedModel, base: ModelConfig | None) -> ModelConfig:
    """The catalogue entry of a fine-tuned language model: its base's licence and limits."""
    return ModelConfig(
        name=model.name,
        kind="chat",
        description=(
            f"{model.base} fine-tuned with LoRA by {model.institution} (job {model.job_id}); "
            f"served by llama.cpp at {model.site}"
        ),
        context_length=base.context_length if base else None,
        owned_by=model.institution,
        modalities=list(base.modalities) if base else [],
        license=base.license if base else "",
        owner_site=model.site,
        base_model=model.base,
        institutions=[model.institution],
    )


def backend_name(model: FineTunedModel) -> str:
    return f"{model.site}-ft-{model.job_id[-12:]}"


class LanguageModels:
    """Keeps every registered fine-tuned language model served and routable."""

    def __init__(
        self,
        config: FederationConfig,
        federation: Federation,
        pool: UpstreamPool | None,
        runners: dict[str, Runner],
        models: ModelRegistry,
        python: str = "",
    ) -> None:
        self.config = config
        self.federation = federation
        self.pool = pool
        self.runners = runners
        self.models = models
        self.python = python or sys.executable
        self.servers: dict[str, AdapterServers] = {}
        self._failed: dict[str, float] = {}

    def _site(self, name: str) -> SiteConfig | None:
        return next((s for s in self.config.sites if s.name == name), None)

    def files(self, model: FineTunedModel) -> tuple[Path, Path] | None:
        """The base GGUF and the adapter at the model's site, or None if this site's
        llama.cpp cannot serve it (a base kept as a Hugging Face folder: vLLM's case)."""
        site, runner = self._site(model.site), self.runners.get(model.site)
        workdir = getattr(runner, "workdir", None)
        if site is None or site.runner is None or not isinstance(workdir, Path):
            return None
        base = site.runner.base_models.get(model.base, "")
        if not base.endswith(".gguf"):
            return None
        return Path(base), workdir / model.job_id / model.adapter

    async def sync(self) -> None:
        """Start a server for each language model without one and route to it."""
        for model in self.models.all():
            routed = bool(self.federation.backends_at(model.name, model.site))
            servers = self.servers.get(model.site)
            if not model.adapter or (routed and servers is not None and servers.url(model.name)):
                continue  # served and routed (a dead server is started again, same address)
            if time.monotonic() - self._failed.get(model.name, -RETRY_SECONDS) < RETRY_SECONDS:
                continue
            found = self.files(model)
            if found is None:
                continue
            if servers is None:
                workdir = getattr(self.runners[model.site], "workdir", Path("."))
                servers = AdapterServers(self.python, Path(workdir) / "serving")
                self.servers[model.site] = servers
            try:
                url = await servers.serve(model.name, *found)
            except RunnerError as exc:
                self._failed[model.name] = time.monotonic()
                log.warning("cannot serve %s: %s", model.name, exc)
                continue
            if not routed:
                self._route(model, url)

    def _route(self, model: FineTunedModel, url: str) -> None:
        backend = BackendConfig(
            name=backend_name(model),
            kind="openai",
            url=url,
            models=[model.name],
            max_concurrency=MAX_CONCURRENCY,
        )
        card = model_card(model, self.federation.models.get(model.base))
        for added in self.federation.add_model(card, model.site, [backend]):
            if self.pool is not None:
                self.pool.add(added)

    async def aclose(self) -> None:
        for servers in self.servers.values():
            await servers.aclose()
