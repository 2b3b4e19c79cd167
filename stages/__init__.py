"""The stage library: one module per stage family.

Every module in this package is imported when the engine loads stages, so a new family is a new
module here and nothing else; each stage registers itself by its `name`.
"""

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    if not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")
