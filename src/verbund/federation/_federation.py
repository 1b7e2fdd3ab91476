"""The runtime federation: sites, backends and models built from the config."""

from __future__ import annotations

from collections.abc import Iterator

from verbund.config import BackendConfig, FederationConfig, ModelConfig, SiteState
from verbund.federation._backend import Backend
from verbund.federation._site import Site


class Federation:
    """Owns the live state of every site and backend of one access point."""

    def __init__(self, config: FederationConfig) -> None:
        self.config = config
        self.sites: dict[str, Site] = {}
        self.backends: dict[str, Backend] = {}
        for sc in config.sites:
            site = Site(config=sc, state=sc.state)
            for bc in sc.backends:
                backend = Backend(config=bc, site=site)
                site.backends.append(backend)
                self.backends[bc.name] = backend
            self.sites[sc.name] = site
        self.models: dict[str, ModelConfig] = {m.name: m for m in config.models}
        self._by_model: dict[str, list[Backend]] = {m: [] for m in self.models}
        # model -> site name -> its backends serving the model (the router's inner loop)
        self._by_model_site: dict[str, dict[str, list[Backend]]] = {m: {} for m in self.models}
        for b in self.backends.values():
            for m in b.config.models:
                self._by_model[m].append(b)
                self._by_model_site[m].setdefault(b.site.name, []).append(b)
        self._sites_by_model = {
            m: [self.sites[name] for name in by_site] for m, by_site in self._by_model_site.items()
        }

    def add_model(
        self, model: ModelConfig, site: str, backends: list[BackendConfig]
    ) -> list[Backend]:
        """A model that appeared at run time (a fine-tuned one a site now serves), with its
        backends at ``site``; a model already known keeps its entry and gains the backends.
        Returns the new backends, for the upstream pool."""
        s = self.sites[site]
        self.models.setdefault(model.name, model)
        added = []
        for bc in backends:
            if bc.name in self.backends:
                continue
            backend = Backend(config=bc, site=s)
            s.backends.append(backend)
            self.backends[bc.name] = backend
            self._by_model.setdefault(model.name, []).append(backend)
            by_site = self._by_model_site.setdefault(model.name, {})
            by_site.setdefault(site, []).append(backend)
            self._sites_by_model[model.name] = [self.sites[n] for n in by_site]
            added.append(backend)
        return added

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
