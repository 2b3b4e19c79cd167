"""The stage registry: every stage class by its `name`, filled by subclassing `Stage` (see `pipeline.stage`), and
the plugins that bring more stages (the built-in library, packages under the `corpusforge.stages` entry point,
CORPUSFORGE_PLUGINS)."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

from pipeline.errors import PipelineError

if TYPE_CHECKING:
    from pipeline.stage import Stage

STAGES: dict[str, type[Stage]] = {}


def add_unique(registry: dict[str, Any], key: str, cls: type, what: str) -> type:
    """Put `cls` in `registry` under `key`. Another class under the same key is an error naming both modules; the
    same class defined again (a module imported twice) replaces itself. Shared by every registry of classes."""
    existing = registry.get(key)
    if existing is not None and existing.__qualname__ != cls.__qualname__:
        raise RuntimeError(f"two {what} are named '{key}': {existing.__module__} and {cls.__module__}")
    registry[key] = cls
    return cls


def register(cls: type[Stage]) -> type[Stage]:
    """Add a stage class to the registry under `cls.name` (done automatically by subclassing)."""
    return add_unique(STAGES, cls.name, cls, "stages")


def stage_class(name: str) -> type[Stage]:
    load_plugins()
    if not isinstance(name, str):
        raise PipelineError(f"a stage name is text, got {name!r} ({type(name).__name__})",
                            hint="run `pipeline stages` to list them")
    try:
        return STAGES[name]
    except KeyError:
        import difflib

        close = difflib.get_close_matches(name, STAGES, n=1)
        hint = f"did you mean '{close[0]}'?" if close else "run `pipeline stages` to list them"
        raise PipelineError(f"unknown stage '{name}'", hint=hint) from None


_PLUGINS_LOADED = False


def load_plugins() -> None:
    """Import the built-in stage library and any package registered under `corpusforge.stages`.

    The environment variable CORPUSFORGE_PLUGINS (comma-separated module names) adds modules,
    which is how tests and notebooks bring their own stages to the CLI.
    """
    global _PLUGINS_LOADED
    if _PLUGINS_LOADED:
        return
    _PLUGINS_LOADED = True
    import importlib
    import os
    from importlib.metadata import entry_points

    modules = ["stages"]
    with contextlib.suppress(Exception):
        modules += [ep.value for ep in entry_points(group="corpusforge.stages")]
    modules += [m.strip() for m in os.environ.get("CORPUSFORGE_PLUGINS", "").split(",") if m.strip()]
    for mod in dict.fromkeys(modules):
        loaded = importlib.import_module(mod)
        if callable(getattr(loaded, "load_all", None)):  # a package of families imported on demand (stages)
            loaded.load_all()
