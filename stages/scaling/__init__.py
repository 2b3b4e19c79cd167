"""Data-scaling studies: intrinsic dimension, nested subsets, power-law and transfer fits.

Every module of this package is imported so that its stages register themselves; helpers whose
names start with '_' or that hold no stage are imported too, which costs nothing.
"""

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    if not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")
