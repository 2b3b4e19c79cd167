"""Shared HTML report machinery: jinja2 templates with one stylesheet, and matplotlib figures inlined.

Every HTML report of the stage library (the leakage report, the collapse report) extends
`templates/base.html.j2`, which inlines `templates/style.css`, so a report is one file that can be
mailed alone and all reports look alike. Plots are matplotlib figures embedded as PNG, or, where a report
only needs a histogram, SVG written directly (`svg.py`).
"""

from __future__ import annotations

import base64
import contextlib
import io
import os
from functools import cache
from pathlib import Path
from typing import Any

TEMPLATES = Path(__file__).parent / "templates"


def template_cache_dir() -> Path:
    """Where compiled templates are kept (`pipeline cache` lists them as `report-templates`)."""
    from pipeline.stage import default_cache_dir

    return default_cache_dir() / "report-templates"


@cache
def _environment():
    import jinja2

    return jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), autoescape=jinja2.select_autoescape(
        ["html", "html.j2"]), trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined,
        bytecode_cache=_bytecode_cache())


def _bytecode_cache():
    """The templates compiled once per machine, not once per process: compiling them took ~15 ms of every process
    that writes a report (3% of a 31.5 MB n-gram audit). An entry is keyed by its template's source, so an edited
    template compiles again. Best effort: a cache folder that cannot be written, or an entry that cannot be read,
    means the template is compiled, as without a cache."""
    import jinja2

    class BestEffort(jinja2.FileSystemBytecodeCache):
        def load_bytecode(self, bucket) -> None:
            try:
                super().load_bytecode(bucket)
            except Exception:  # a damaged entry (marshal's EOFError, ValueError...): compile instead
                bucket.reset()

        def dump_bytecode(self, bucket) -> None:
            with contextlib.suppress(OSError):
                super().dump_bytecode(bucket)

    folder = template_cache_dir()
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = folder.stat()
    except OSError:
        return None
    # Compiled templates are code this process runs: only from a folder no one else can write to (the library
    # cache may be a team's shared folder; its embeddings are data, these are not).
    if st.st_mode & 0o022 or (hasattr(os, "getuid") and st.st_uid != os.getuid()):
        return None
    return BestEffort(str(folder))


def render(template: str, **context: Any) -> str:
    """Render a template of `templates/` (HTML-escaped unless a value is marked safe)."""
    return _environment().get_template(template).render(**context)


def figure(width: float, height: float, layout: str | None = "constrained"):
    """A matplotlib Figure that needs no display and no global pyplot state."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout=layout)


def png_bytes(fig, dpi: int = 110) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return buf.getvalue()


def png_data_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()
