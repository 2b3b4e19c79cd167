"""The reports' cache, registered with `pipeline cache` (listed with sizes, cleared by age).

- `report-templates`: the HTML and Markdown report templates compiled by jinja2, one file per template, under
  the library cache. Removing any of them only means those templates are compiled again.
"""

from __future__ import annotations

from pipeline.caches import register_cache
from stages._report import template_cache_dir

register_cache("report-templates", "compiled report templates (jinja2 bytecode)", lambda _w: [template_cache_dir()],
               lambda root: sorted(root.glob("*.cache")))
