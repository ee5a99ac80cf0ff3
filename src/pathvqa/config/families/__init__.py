"""The model families' config sections, one module each (``model.family: NAME``): each defines ``SECTION``,
a :class:`~pathvqa.config.sections.ModelSection` with its ``family`` literal and the ``implementation`` that
builds its model. The schema's ``model`` union is built from :func:`discovered`; a new family is a module
here, its model module in ``models/``, a tiny config and tests.
"""

from __future__ import annotations

import importlib
import pkgutil

from pathvqa.config.sections import ModelSection


def discovered() -> dict[str, type[ModelSection]]:
    """Every family's section by its ``model.family`` name, in their order."""
    found = []
    for module in pkgutil.iter_modules(__path__):
        section = getattr(importlib.import_module(f"{__name__}.{module.name}"), "SECTION", None)
        if isinstance(section, type) and issubclass(section, ModelSection):
            found.append(section)
    return {s.family_name(): s for s in sorted(found, key=lambda s: (s.order, s.family_name()))}
