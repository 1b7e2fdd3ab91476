"""The federation as a region diagram: one tile per region, the region's sites inside.

A tile map rather than a drawn map: German states (the ``region`` codes sites use, ISO
3166-2:DE without the prefix) keep their rough places on a 5 x 4 grid, so a reader finds
Nordrhein-Westfalen in the west and Sachsen in the east at a glance, every tile has room
for its sites' names, and no map data ships with Verbund. Regions that are not German
states (another country, a cloud region) get tiles in a row below. Each site box says its
state and health in words as well as in colour, and its availability over 24 hours.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

__all__ = ["STATES", "SiteMark", "region_diagram"]

# region code -> (row, column, name)
STATES: dict[str, tuple[int, int, str]] = {
    "SH": (0, 1, "Schleswig-Holstein"),
    "MV": (0, 2, "Mecklenburg-Vorpommern"),
    "HB": (1, 0, "Bremen"),
    "HH": (1, 1, "Hamburg"),
    "BB": (1, 2, "Brandenburg"),
    "BE": (1, 3, "Berlin"),
    "NW": (2, 0, "Nordrhein-Westfalen"),
    "NI": (2, 1, "Niedersachsen"),
    "ST": (2, 2, "Sachsen-Anhalt"),
    "RP": (3, 0, "Rheinland-Pfalz"),
    "HE": (3, 1, "Hessen"),
    "TH": (3, 2, "Thüringen"),
    "SN": (3, 3, "Sachsen"),
    "SL": (4, 0, "Saarland"),
    "BW": (4, 1, "Baden-Württemberg"),
    "BY": (4, 2, "Bayern"),
}
TILE_W, TILE_H, GAP, PAD = 190, 118, 8, 12
SITE_H = 34


@dataclass(frozen=True, slots=True)
class SiteMark:
    name: str
    region: str
    state: str  # active | draining | maintenance
    healthy: bool
    availability_24h: float | None = None


def _status(site: SiteMark) -> tuple[str, str]:
    """(css class, words) for a site box."""
    if site.state == "maintenance":
        return "site-maintenance", "maintenance"
    if site.state == "draining":
        return "site-draining", "draining"
    return ("site-up", "active, healthy") if site.healthy else ("site-down", "active, down")


def _t(text: object) -> str:
    return escape(str(text), quote=True)


def region_diagram(sites: Sequence[SiteMark], title: str = "Sites by region") -> str:
    by_region: dict[str, list[SiteMark]] = {}
    for s in sites:
        by_region.setdefault(s.region, []).append(s)
    others = sorted(r for r in by_region if r not in STATES)
    cols = 4
    rows = 5 + (len(others) + cols - 1) // cols
    tallest = max([len(v) for v in by_region.values()] + [1])
    tile_h = max(TILE_H, 30 + tallest * (SITE_H + 4))
    width = PAD * 2 + cols * (TILE_W + GAP)
    height = 40 + rows * (tile_h + GAP) + PAD
    places = {code: (r, c, name) for code, (r, c, name) in STATES.items()}
    for i, code in enumerate(others):
        places[code] = (5 + i // cols, i % cols, code)
    body = []
    for code, (r, c, name) in places.items():
        x, y = PAD + c * (TILE_W + GAP), 40 + r * (tile_h + GAP)
        here = by_region.get(code, [])
        cls = "region has-sites" if here else "region"
        body.append(
            f'<g class="{cls}"><rect x="{x}" y="{y}" width="{TILE_W}" height="{tile_h}" rx="6"/>'
            f'<text class="region-name" x="{x + 8}" y="{y + 17}">{_t(code)}</text>'
            f'<text class="region-full" x="{x + 34}" y="{y + 17}">{_t(name[:24])}</text>'
        )
        for k, s in enumerate(sorted(here, key=lambda s: s.name)):
            sy = y + 26 + k * (SITE_H + 4)
            css, words = _status(s)
            avail = "no data" if s.availability_24h is None else f"{s.availability_24h:.1%}"
            body.append(
                f'<g class="site {css}" data-site="{_t(s.name)}">'
                f'<rect x="{x + 6}" y="{sy}" width="{TILE_W - 12}" height="{SITE_H}" rx="4"/>'
                f'<text class="site-name" x="{x + 12}" y="{sy + 14}">{_t(s.name[:22])}</text>'
                f'<text class="site-state" x="{x + 12}" y="{sy + 28}">{_t(words)} · '
                f"24 h {_t(avail)}</text><title>{_t(s.name)}: {_t(words)}, "
                f"availability over 24 h {_t(avail)}</title></g>"
            )
        body.append("</g>")
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart regions" viewBox="0 0 {width} '
        f'{height}" width="{width}" height="{height}" role="img" aria-label="{_t(title)}">'
        f'<title>{_t(title)}</title><text class="chart-title" x="{PAD}" y="24">{_t(title)}</text>'
        + "".join(body)
        + "</svg>"
    )
