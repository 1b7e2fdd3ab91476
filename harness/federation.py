"""Federation configs as data, and the one place that writes them as TOML.

A config is the dict that ``verbund.config.parse_config`` takes (in-process tests pass
it straight in); a process reads the same dict written by :func:`write_toml`. The
builders below fill in what every test federation needs and take the rest as keyword
fields, named as in the config reference.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import tomli_w

Section = dict[str, Any]


def backend(name: str, url: str, models: Iterable[str], **fields: Any) -> Section:
    """One ``[[sites.backends]]`` entry."""
    return {"name": name, "url": url, "models": list(models), **fields}


def site(
    name: str,
    region: str,
    backends: Sequence[Section] = (),
    *,
    jurisdiction: str = "DE",
    **fields: Any,
) -> Section:
    """One ``[[sites]]`` entry (``runner``, ``prices``, ``max_data_class``... as fields)."""
    out: Section = {"name": name, "region": region, "jurisdiction": jurisdiction, **fields}
    if backends:
        out["backends"] = list(backends)
    return out


def institution(id: str, **fields: Any) -> Section:
    """One ``[[institutions]]`` entry."""
    return {"id": id, **fields}


def model(name: str, kind: str = "chat") -> Section:
    return {"name": name, "kind": kind}


def sqlite_store(state_dir: Path) -> Section:
    return {"url": f"sqlite+aiosqlite:///{state_dir / 'verbund.db'}"}


def federation(
    name: str,
    state_dir: Path,
    sites: Sequence[Section],
    *,
    port: int | None = None,
    models: Iterable[str | Section] = (),
    institutions: Sequence[Section] = (),
    gateway: Mapping[str, Any] | None = None,
    **sections: Any,
) -> Section:
    """A whole config: ``[gateway]`` (listening on 127.0.0.1:``port`` if given), a SQLite
    store in ``state_dir`` unless ``store`` is among ``sections``, the sites, models and
    institutions, and any further top-level ``sections`` (``routing``, ``batch``...)."""
    gw: Section = {"name": name, "state_dir": str(state_dir), **(gateway or {})}
    if port is not None:
        gw["listen"] = f"127.0.0.1:{port}"
    data: Section = {"gateway": gw, "store": sqlite_store(state_dir)}
    data.update(sections)
    data["sites"] = list(sites)
    listed = [model(m) if isinstance(m, str) else dict(m) for m in models]
    if listed:
        data["models"] = listed
    if institutions:
        data["institutions"] = list(institutions)
    return data


def write_toml(config: Mapping[str, Any], path: Path) -> Path:
    """Write ``config`` as TOML to ``path`` (folders made as needed); returns ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(tomli_w.dumps(_plain(config)), encoding="utf-8")
    return path


def _plain(value: Any) -> Any:
    """Paths as strings and tuples as lists: what TOML can hold."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value
