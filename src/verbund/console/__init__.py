"""The web console for people, served by the access point at ``/console``.

Server-rendered pages (Jinja2 templates, autoescaped) with SVG charts drawn by the
server and one small script, all served from this package: no CDN. Pages are
role-checked with the same permission function the API enforces; docs/console.md lists
them per role.
"""

from verbund.console._charts import Line, bar_chart, line_chart, stacked_bar_chart
from verbund.console._mount import BASE, console_routes
from verbund.console._regions import SiteMark, region_diagram

__all__ = [
    "BASE",
    "Line",
    "SiteMark",
    "bar_chart",
    "console_routes",
    "line_chart",
    "region_diagram",
    "stacked_bar_chart",
]
