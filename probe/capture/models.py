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

The same wrapper tags the instances a queryset's iterator builds with the query that loaded
them (see origin.py): once the unit has run such a query, one ``sys._getframe`` and two frame
hops per instance, and a dict lookup.
"""

from __future__ import annotations

import functools
import sys
from typing import Any

from django.db.models import Model

from ..recorder import current_unit
from . import note_error
from .origin import FROM_DB_CODE, ITER_CODE, LOADED, ORIGIN, loaded_by

_originals: dict[str, Any] = {}
_getframe = sys._getframe


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
                loaders = unit.loaders
                if loaders:
                    caller = _getframe(1)
                    frame = caller.f_back if caller.f_code is FROM_DB_CODE else None
                    if frame is not None and frame.f_code is ITER_CODE:
                        origin = loaders.get(id(frame))  # the usual: a queryset's row
                    else:
                        origin = loaded_by(caller, loaders)
                    if origin is not None:
                        rows = unit.rows
                        rows[origin[1]] = rows.get(origin[1], 0) + 1
                        state = self.__dict__
                        state[ORIGIN] = origin
                        # from_db passes the row, one value per concrete field (DEFERRED
                        # for the deferred ones): kept as loaded, so a save can say what
                        # changed (no copy: the tuple is the call's own).
                        state[LOADED] = args
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
