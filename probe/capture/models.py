"""Per-request counts of model instances created, by model label.

Every instance counts: rows loaded by querysets, ``select_related`` joins, prefetches and
objects built in code; exactly the instances Django sends ``post_init`` for (the end of
``Model.__init__``). Counting wraps ``Model.__init__`` rather than connecting to ``post_init``:
a ``post_init`` receiver makes Django dispatch the signal for every instance (``Signal.send``
returns at once while nobody listens), which cost several times more than this wrapper, and the
pages that load hundreds of rows are the ones being profiled. The wrapper runs the original,
then (inside a unit) counts one instance of its class; the unit turns classes into labels when
it is read. Outside a unit it costs one ContextVar read per instance. Installed once,
process-wide; uninstalling restores the original unless someone wrapped it since.
"""

from __future__ import annotations

import functools
from typing import Any

from django.db.models import Model

from ..recorder import current_unit
from . import note_error

_originals: dict[str, Any] = {}


def _wrap(original: Any) -> Any:
    @functools.wraps(original)
    def __init__(self: Model, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        unit = current_unit.get()
        if unit is not None:
            try:
                counts = unit.instance_counts
                model = self.__class__
                counts[model] = counts.get(model, 0) + 1
            except Exception:
                note_error("models")

    __init__.__djangoscope__ = True  # type: ignore[attr-defined]
    return __init__


def install() -> None:
    current = Model.__dict__["__init__"]
    if not getattr(current, "__djangoscope__", False):
        _originals["__init__"] = current
        Model.__init__ = _wrap(current)  # type: ignore[method-assign]


def uninstall() -> None:
    current = Model.__dict__["__init__"]
    if getattr(current, "__djangoscope__", False):
        Model.__init__ = current.__wrapped__  # type: ignore[method-assign]
