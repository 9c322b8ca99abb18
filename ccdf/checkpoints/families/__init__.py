"""One module per checkpoint family; importing this package registers them all.

Each module defines a :class:`ccdf.checkpoints.family.CheckpointFamily` subclass, registers an
instance with :func:`~ccdf.checkpoints.family.register_family` and its published architectures with
:func:`~ccdf.checkpoints.presets.register_presets`. Modules are found by listing this package, so a new
family is a new module here (plus its network in ``ccdf/nets`` and, for ``run.py``, a ``conf/`` file).
"""

from __future__ import annotations

import importlib
import pkgutil

for _info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    importlib.import_module(f"{__name__}.{_info.name}")
