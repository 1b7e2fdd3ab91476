"""Fine-tuned language models of a site: served here, announced to the federation.

A succeeded ``lora-sft`` job's model becomes a federation model like any other. The site's
agent (:class:`verbund.jobs.SiteJobs` keeps the models) starts, for each such model, the
llama.cpp server of :class:`AdapterServers` with the site's base GGUF (the runner's
``base_models``) and the job's adapter, and announces the model in its catalogue: a
``ModelConfig`` whose card inherits the base's licence, context length and modalities
and names the base, ``institutions`` its institution alone, and one backend, that
server. Every access point applies the catalogue like any other, so requests take the
one request path (admission, quotas, routing, failover, usage); another institution
gets 404 from admission and does not see the model in ``/v1/models``.

The adapter is never read by this code, only located in the job's folder at the site;
it never leaves the site (nor does the base).
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from verbund.config import BackendConfig, ModelConfig, inherited_license
from verbund.errors import RunnerError
from verbund.jobs._adapters import AdapterServers
from verbund.jobs._models import FineTunedModel, ModelRegistry

log = logging.getLogger("verbund.jobs")

RETRY_SECONDS = 60.0  # a model whose server failed to start is tried again after this
MAX_CONCURRENCY = 4


def model_card(
    model: FineTunedModel,
    base: ModelConfig | None,
    models: Mapping[str, ModelConfig] | None = None,
) -> ModelConfig:
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
        license=inherited_license(base, models or {}) if base else "",
        owner_site=model.site,
        base_model=model.base,
        institutions=[model.institution],
    )


def backend_name(model: FineTunedModel) -> str:
    return f"{model.site}-ft-{model.job_id[-12:]}"


class LanguageModels:
    """Keeps every fine-tuned language model of one site served, and says what to announce."""

    def __init__(
        self,
        base_models: Mapping[str, str],
        workdir: Path,
        models: ModelRegistry,
        python: str = "",
    ) -> None:
        self.base_models = dict(base_models)
        self.workdir = workdir
        self.models = models
        self.servers = AdapterServers(python or sys.executable, workdir / "serving")
        self._failed: dict[str, float] = {}
        self._served: dict[str, tuple[FineTunedModel, str]] = {}  # name -> model, url

    def files(self, model: FineTunedModel) -> tuple[Path, Path] | None:
        """The base GGUF and the adapter at this site, or None if llama.cpp cannot serve
        it (a base kept as a Hugging Face folder: vLLM's case)."""
        base = self.base_models.get(model.base, "")
        if not base.endswith(".gguf") or not model.adapter:
            return None
        return Path(base), self.workdir / model.job_id / model.adapter

    async def sync(self) -> bool:
        """Start a server for each language model without a live one; True when the set
        of models to announce changed (the agent then renews its offer)."""
        before = {name: url for name, (_, url) in self._served.items()}
        for model in self.models.all():
            if not model.adapter:
                continue
            if self.servers.url(model.name) is not None:
                continue  # served (a dead server is started again, same address)
            if time.monotonic() - self._failed.get(model.name, -RETRY_SECONDS) < RETRY_SECONDS:
                continue
            found = self.files(model)
            if found is None:
                continue
            try:
                url = await self.servers.serve(model.name, *found)
            except RunnerError as exc:
                self._failed[model.name] = time.monotonic()
                self._served.pop(model.name, None)
                log.warning("cannot serve %s: %s", model.name, exc)
                continue
            self._served[model.name] = (model, url)
        return before != {name: url for name, (_, url) in self._served.items()}

    def offered(
        self, bases: Mapping[str, ModelConfig]
    ) -> tuple[list[ModelConfig], list[BackendConfig]]:
        """The served models' cards (``bases``: the site's models, for the base's card) and
        their backends, the llama.cpp servers."""
        cards: list[ModelConfig] = []
        backends: list[BackendConfig] = []
        for name, (model, url) in sorted(self._served.items()):
            cards.append(model_card(model, bases.get(model.base), bases))
            backends.append(
                BackendConfig(
                    name=backend_name(model),
                    kind="openai",
                    url=url,
                    models=[name],
                    max_concurrency=MAX_CONCURRENCY,
                )
            )
        return cards, backends

    async def aclose(self) -> None:
        await self.servers.aclose()
