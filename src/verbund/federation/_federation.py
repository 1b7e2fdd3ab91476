"""The runtime federation: sites, backends and models built from the config."""

from __future__ import annotations

import logging
from collections.abc import Iterator

from verbund.config import BackendConfig, FederationConfig, ModelConfig, SiteConfig, SiteState
from verbund.federation._backend import Backend
from verbund.federation._site import Site

log = logging.getLogger("verbund.federation")


class Federation:
    """Owns the live state of every site and backend of one access point."""

    def __init__(self, config: FederationConfig) -> None:
        self.config = config
        self.sites: dict[str, Site] = {}
        self.backends: dict[str, Backend] = {}
        for sc in config.sites:
            site = Site(config=sc, own_state=sc.state)
            for bc in sc.backends:
                backend = Backend(config=bc, site=site)
                site.backends.append(backend)
                self.backends[bc.name] = backend
            self.sites[sc.name] = site
        self._configured: dict[str, ModelConfig] = {m.name: m for m in config.models}
        self._announced: dict[str, dict[str, ModelConfig]] = {}  # site -> its agent's models
        self.version = 0  # counts changes of the backends (the prober's schedule follows)
        self._index()

    def _index(self) -> None:
        """Rebuild the lookups the router reads. New dicts replace the old ones whole, so
        a request that holds one sees a consistent picture."""
        models = dict(self._configured)
        for announced in self._announced.values():
            for model_name, model in announced.items():
                models.setdefault(model_name, model)  # the config's entry, or the first site's
        by_model: dict[str, list[Backend]] = {m: [] for m in models}
        # model -> site name -> its backends serving the model (the router's inner loop)
        by_model_site: dict[str, dict[str, list[Backend]]] = {m: {} for m in models}
        for b in self.backends.values():
            for served in b.config.models:
                if served in by_model:
                    by_model[served].append(b)
                    by_model_site[served].setdefault(b.site.name, []).append(b)
        # a site that starts a model on demand is one of its sites even with nothing running
        for site_name, announced in self._announced.items():
            for model_name in announced:
                site = self.sites.get(site_name)
                if site is not None and model_name in site.on_demand:
                    by_model_site[model_name].setdefault(site_name, [])
        self.models: dict[str, ModelConfig] = models
        self._by_model = by_model
        self._by_model_site = by_model_site
        self._sites_by_model = {
            m: [self.sites[name] for name in by_site] for m, by_site in by_model_site.items()
        }
        self.version += 1

    def apply_site(
        self,
        name: str,
        config: SiteConfig,
        models: list[ModelConfig],
        backends: list[BackendConfig],
    ) -> tuple[list[Backend], list[Backend]]:
        """Make ``name``'s announced offer (its agent's catalogue) the live one, without a
        restart: backends that did not change keep their live state (health, load,
        latency); new ones start fresh; gone ones leave the routing at once (requests in
        flight there finish). Backends named like another site's are refused (logged).
        Returns the backends added and removed, for the clients' pool."""
        site = self.sites[name]
        site.config = config
        self._announced[name] = {m.name: m for m in models}
        old = {b.name: b for b in site.backends if b.announced}
        kept = [b for b in site.backends if not b.announced]  # the config's own backends
        added: list[Backend] = []
        for bc in backends:
            other = self.backends.get(bc.name)
            if other is not None and not (other.site is site and other.announced):
                log.warning("site %s announces a backend named like another: %s", name, bc.name)
                continue
            prev = old.pop(bc.name, None)
            if prev is not None and prev.config == bc:
                kept.append(prev)
                continue
            if prev is not None:
                old[bc.name] = prev  # replaced: its client goes, the new one comes
            backend = Backend(config=bc, site=site, announced=True)
            kept.append(backend)
            added.append(backend)
        removed = list(old.values())
        backends_now = dict(self.backends)
        for b in removed:
            if backends_now.get(b.name) is b:
                del backends_now[b.name]
        for b in added:
            backends_now[b.name] = b
        self.backends = backends_now
        site.backends = kept
        self._index()
        return added, removed

    def visible(self, model: str, institution: str) -> bool:
        """Whether ``institution`` may know of ``model``: a model reserved for some
        institutions (a fine-tuned one) does not exist for the others. An unknown name
        is visible (it is the router's 404)."""
        config = self.models.get(model)
        return config is None or not config.institutions or institution in config.institutions

    @property
    def home_site(self) -> str:
        return self.config.gateway.home_site

    def backends_for(self, model: str) -> list[Backend]:
        return self._by_model.get(model, [])

    def site_configs(self) -> list[SiteConfig]:
        """The sites' facts as routing sees them now: what their agents announced
        (facts, prices) where this access point's config leaves it open."""
        return [s.config for s in self.sites.values()]

    def sites_for(self, model: str) -> list[Site]:
        return list(self._sites_by_model.get(model, ()))

    def backends_at(self, model: str, site: str) -> list[Backend]:
        """The backends of ``site`` that serve ``model`` (do not modify the list)."""
        return self._by_model_site.get(model, {}).get(site, [])

    def set_state(self, site: str, state: SiteState) -> SiteState:
        """Change a site's lifecycle state; returns the previous one."""
        s = self.sites[site]
        before, s.state = s.state, state
        return before

    def __iter__(self) -> Iterator[Site]:
        return iter(self.sites.values())
